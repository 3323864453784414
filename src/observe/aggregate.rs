//! Per-workload sums for `User` attribution, which cannot tell a workload's pods
//! apart. Pure. (A pod's backends are summarised against the policy's measure by
//! `decide::measure`, which owns the measures.)

use crate::observation::{Measured, PoolClaims};

/// The pool claims of a whole workload (`User` attribution): the sum over its pods,
/// unknown when any pod's is — a missing pod is never counted as zero.
pub fn sum_claims<'a>(pods: impl IntoIterator<Item = &'a Measured<PoolClaims>>) -> Measured<PoolClaims> {
    let mut sum = PoolClaims::default();
    for claims in pods {
        match claims {
            Measured::Known(c) => {
                sum.checked_out += c.checked_out;
                sum.tracked_active += c.tracked_active;
            }
            Measured::Unknown(why) => return Measured::Unknown(why.clone()),
        }
    }
    Measured::Known(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_claims_the_sum_of_its_pods_or_unknown() {
        let pod = |checked_out, tracked_active| {
            Measured::Known(PoolClaims {
                checked_out,
                tracked_active,
            })
        };
        assert_eq!(
            sum_claims(&[pod(5, 3), pod(7, 7)]),
            Measured::Known(PoolClaims {
                checked_out: 12,
                tracked_active: 10
            })
        );
        assert_eq!(
            sum_claims(&[pod(5, 3), Measured::Unknown("timeout".into())]),
            Measured::Unknown("timeout".into())
        );
    }
}
