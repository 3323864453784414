//! `check` must never panic, whatever it is fed: arbitrary bytes, arbitrary YAML,
//! and PoolPolicy-shaped YAML with arbitrary values in the fields it knows.

use poolwarden::check::check_source;
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 /_.{}\\[\\]:-]{0,12}",
        Just("~".to_owned()),
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        "[0-9]{1,4}(ms|s|m|h|d|x)?",
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        prop::sample::select(vec!["SQLAlchemy", "PsycopgPool", "HikariCP", "SpringBoot", "Pgx"]).prop_map(String::from),
    ]
}

const KEYS: &[&str] = &[
    "selector",
    "matchLabels",
    "matchExpressions",
    "kinds",
    "containers",
    "interval",
    "database",
    "urlSecretRef",
    "name",
    "key",
    "attribution",
    "pool",
    "minSize",
    "maxSize",
    "maxIdleSeconds",
    "maxLifetimeSeconds",
    "library",
    "maxLifetimeJitterSeconds",
    "healthCheckPeriodSeconds",
    "env",
    "extraEnv",
    "value",
    "poolStats",
    "port",
    "path",
    "format",
    "checkedOut",
    "trackedActive",
    "timeout",
    "discrepancy",
    "measure",
    "max",
    "sustainedFor",
    "grace",
    "remediation",
    "action",
    "dryRun",
    "cooldown",
    "maxRestartsPerHour",
    "minAvailableReplicas",
    "operator",
    "values",
    "maxIdelSeconds",
];

fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let leaf = scalar().boxed();
    if depth == 0 {
        return leaf;
    }
    prop_oneof![
        leaf,
        prop::collection::vec((prop::sample::select(KEYS), yaml_value(depth - 1)), 0..5).prop_map(|entries| {
            let body: Vec<String> = entries.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", body.join(", "))
        }),
        prop::collection::vec(yaml_value(depth - 1), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = check_source("fuzz", &text);
    }

    #[test]
    fn arbitrary_yaml_never_panics(doc in yaml_value(3)) {
        let _ = check_source("fuzz", &doc);
    }

    #[test]
    fn arbitrary_policy_shaped_yaml_never_panics(spec in yaml_value(4), extra in yaml_value(2)) {
        let doc = format!("apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {{name: x}}\nspec: {spec}\nstatus: {extra}\n");
        let _ = check_source("fuzz", &doc);
    }
}
