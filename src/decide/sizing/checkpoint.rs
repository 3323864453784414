//! A workload's sizing history as a checkpoint (VPA keeps one per container in a
//! `VerticalPodAutoscalerCheckpoint`): the few string fields of a ConfigMap's data,
//! written a few times an hour and read back when a controller starts or takes the
//! lead. Pure: the Kubernetes target reads and writes the objects.

use std::{collections::BTreeMap, time::Duration};

use super::history::History;
use crate::decide::input::{Kind, WorkloadRef};

/// The data keys.
const POLICY: &str = "policy";
const KIND: &str = "kind";
const WORKLOAD: &str = "workload";
const WINDOW: &str = "windowSeconds";
const HISTORY: &str = "history";

/// The checkpoint object's name: one per policy and workload, short and stable
/// whatever the names' lengths (the readable names are in its data).
pub fn name(policy: &str, w: &WorkloadRef) -> String {
    format!(
        "poolwarden-sizing-{}",
        crate::digest::short(format!("{policy}/{}/{}", w.kind, w.name).as_bytes())
    )
}

/// The label value that selects a policy's checkpoints (a digest: a label value
/// holds 63 characters, a policy's name up to 253).
pub fn policy_label(policy: &str) -> String {
    crate::digest::short(policy.as_bytes())
}

/// The checkpoint's data.
pub fn encode(policy: &str, w: &WorkloadRef, h: &History, window: Duration) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POLICY.to_owned(), policy.to_owned()),
        (KIND.to_owned(), w.kind.to_string()),
        (WORKLOAD.to_owned(), w.name.clone()),
        (WINDOW.to_owned(), window.as_secs_f64().to_string()),
        // A History is plain numbers: serializing it cannot fail.
        (HISTORY.to_owned(), serde_json::to_string(h).unwrap_or_default()),
    ])
}

/// A checkpoint read back: its workload and history, or why it is not used (another
/// policy's, another window length, malformed). Never a partial history.
pub fn decode(
    policy: &str,
    data: &BTreeMap<String, String>,
    window: Duration,
) -> Result<(WorkloadRef, History), String> {
    let get = |k: &str| data.get(k).ok_or_else(|| format!("no {k}"));
    if get(POLICY)? != policy {
        return Err("another policy's".to_owned());
    }
    let kind = Kind::parse(get(KIND)?).ok_or("an unknown kind")?;
    let seconds: f64 = get(WINDOW)?.parse().map_err(|_| "an unreadable window")?;
    if (seconds - window.as_secs_f64()).abs() > 1e-9 {
        return Err(format!(
            "counted in {seconds} s windows, not {} s",
            window.as_secs_f64()
        ));
    }
    let h: History = serde_json::from_str(get(HISTORY)?).map_err(|e| format!("history: {e}"))?;
    if !h.is_valid() {
        return Err("history: malformed".to_owned());
    }
    let w = WorkloadRef {
        kind,
        name: get(WORKLOAD)?.clone(),
    };
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn web() -> WorkloadRef {
        WorkloadRef {
            kind: Kind::Deployment,
            name: "web".to_owned(),
        }
    }

    #[test]
    fn a_history_survives_its_checkpoint_and_a_foreign_or_damaged_one_is_refused() {
        let mut h = History::default();
        for m in 0..200 {
            h.observe("web-a", (m % 7) as u32, Timestamp::from_second(m * 60).unwrap(), MINUTE);
        }
        h.close_before(Timestamp::from_second(200 * 60).unwrap(), MINUTE);
        h.last_write = Some(Timestamp::from_second(1234).unwrap());
        let data = encode("prod/pools", &web(), &h, MINUTE);
        let (w, back) = decode("prod/pools", &data, MINUTE).unwrap();
        assert_eq!(w, web());
        assert_eq!(back, h);
        assert!(data[HISTORY].len() < 1024, "{} bytes", data[HISTORY].len());
        assert!(decode("prod/other", &data, MINUTE).is_err());
        assert!(decode("prod/pools", &data, Duration::from_secs(1)).is_err());
        let mut broken = data.clone();
        broken.insert(
            HISTORY.to_owned(),
            r#"{"h":{"ref":0,"b":[[3,1.0],[2,1.0]]}}"#.to_owned(),
        );
        assert_eq!(decode("prod/pools", &broken, MINUTE).unwrap_err(), "history: malformed");
        assert!(name("prod/pools", &web()).len() <= 63);
    }
}
