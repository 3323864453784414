//! One row of `pg_stat_activity` (a client backend), as the sampler reads it. The
//! type is plain data in [`crate::observation`]: the decision core reads a pod's
//! backends to summarise them against the policy's measure.

pub use crate::observation::{Backend, QueryText};
