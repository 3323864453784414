//! No connection string's password ever leaves poolwarden. A corpus of connection
//! strings, each carrying a known secret in one of libpq's spellings (userinfo, an
//! unencoded `@` and `/`, the query string, percent-encoding, quoted `key=value`
//! with spaces, a passfile), valid and invalid, reachable and not, goes through every
//! output path: `inspect` and `plan` (text and JSON), the controller's logs at debug
//! level, its `/metrics`, the policies' status and the namespace's Events, and
//! `check`. No output may contain a secret, or any 4-byte slice of one.

mod support;

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use poolwarden::policy::PoolPolicy;
use support::e2e::{Cluster, database_url, eventually, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_poolwarden");

/// The secrets: each contains characters a connection string must escape or quote.
const USERINFO: &str = "Hx7q@Vr2/Lm9";
const QUERY: &str = "Qy8&Np3%Fd6";
const QUOTED: &str = "Sp ace Wk4'Zt";
const PASSFILE: &str = "Pf5Gh8Jk2Xw";

fn secrets() -> [&'static str; 4] {
    [USERINFO, QUERY, QUOTED, PASSFILE]
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Every 4-byte window of every secret, and of its percent-encoded spelling.
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for s in secrets() {
        for text in [s.to_owned(), encode(s)] {
            let b = text.as_bytes();
            for w in b.windows(4) {
                out.push(String::from_utf8_lossy(w).into_owned());
            }
        }
    }
    out
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for slice in forbidden() {
        assert!(
            !text.contains(&slice),
            "{what} contains {slice:?} from a secret:\n{}",
            text.lines()
                .filter(|l| l.contains(&slice))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The corpus, against the database at `DATABASE_URL` (trust authentication accepts
/// any password, so the valid strings really connect and sample).
fn corpus(passfile: &str) -> Vec<String> {
    let base = database_url();
    let info = poolwarden::observe::conninfo::ConnInfo::parse(&base).unwrap();
    let e = &info.identity.endpoints[0];
    let host = e.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let (port, user, db) = (e.port, info.identity.user.clone(), info.identity.dbname.clone());
    let q = encode(QUERY);
    let k = QUOTED.replace('\'', "\\'");
    vec![
        // Valid, and sampled.
        format!("postgres://{user}:{}@{host}:{port}/{db}", encode(USERINFO)),
        format!("postgres://{user}:{USERINFO}@{host}:{port}/{db}"),
        format!("postgresql://{host}:{port}/{db}?user={user}&password={q}"),
        format!("host={host} port={port} dbname={db} user={user} password='{k}'"),
        format!("postgres://{user}@{host}:{port}/{db}?passfile={passfile}"),
        // Invalid, each in its own way.
        format!("postgres://{host}:{port}/{db}?user={user}&password={q}&sslmode=bogus"),
        format!("host={host} port={port} user={user} password='{k}' sslmode=bogus"),
        format!("host={host} port={port} user={user} password={QUOTED}"),
        format!("host={host} port={port} user={user} password='{k}"),
        format!("postgres://{user}:{USERINFO}%zz@{host}:{port}/{db}"),
        format!("postgres://{user}:{}@{host}:{port}/{db}?{q}", encode(USERINFO)),
        format!("postgres://{user}:{}@{host}:{port}/{db}?sslcert={q}", encode(USERINFO)),
        format!("mysql://{user}:{USERINFO}@{host}/{db}"),
        format!(
            "postgres://{user}:{}@{host}:{port}/{db}?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
            encode(USERINFO)
        ),
        // Valid but failing: nothing listens, no such database.
        format!("postgres://{user}:{}@127.0.0.1:1/{db}", encode(USERINFO)),
        format!(
            "postgres://{user}:{}@{host}:{port}/no_such_db_{}",
            encode(USERINFO),
            std::process::id()
        ),
    ]
}

fn passfile() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("*:*:*:*:{PASSFILE}\n")).unwrap();
    file
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn inspect_never_shows_a_secret_in_text_or_json() {
    let pf = passfile();
    let corpus = corpus(&pf.path().display().to_string());
    let mut sampled = 0;
    for url in &corpus {
        for format in ["table", "json"] {
            let out = tokio::process::Command::new(BIN)
                .args(["inspect", "--database-url", url, "-o", format])
                .env("RUST_LOG", "debug")
                .output()
                .await
                .unwrap();
            sampled += usize::from(out.status.success());
            assert_clean(&format!("inspect -o {format} {url:?}"), &output_text(&out));
        }
    }
    // The five valid reachable strings sampled, in both formats: the corpus is not all errors.
    assert_eq!(sampled, 10);
}

#[tokio::test]
async fn check_never_shows_a_connection_string_pasted_into_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://mon:{USERINFO}@db/app?password={}", encode(QUERY));
    let file = dir.path().join("pasted.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg}}\nstringData: {{url: {url:?}}}\n---\n\
             apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {{name: a, namespace: prod}}\n\
             spec:\n  selector: {{matchLabels: {{app: web}}}}\n  database:\n    urlSecretRef: {url:?}\n  pool: {{maxSize: 5}}\n---\n\
             apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {{name: b, namespace: prod}}\n\
             spec:\n  interval: {url:?}\n  fly: {{app: web}}\n  database:\n    urlFromEnv: {url:?}\n  pool:\n    maxSize: 5\n    extraEnv: [{{name: DATABASE_URL, value: {url:?}}}]\n"
        ),
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = std::process::Command::new(BIN)
            .args(["check", "-o", format])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        let text = output_text(&out);
        assert!(text.contains("urlSecretRef"), "{text}");
        assert_clean(&format!("check -o {format}"), &text);
    }
}

/// The controller process, its stderr (debug logs) kept in `log` (a file, not a pipe
/// nobody reads while it runs: a full pipe would stall the controller).
fn controller(cluster: &Cluster, metrics: std::net::SocketAddr, log: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--namespace", &cluster.namespace])
        .args(["--metrics-addr", &metrics.to_string()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_controller_and_plan_never_show_a_secret_in_logs_metrics_status_events_or_reports() {
    let cluster = Cluster::start("secrets").await;
    let pf = passfile();
    let corpus = corpus(&pf.path().display().to_string());
    let mut policies = Vec::new();
    for (i, url) in corpus.iter().enumerate() {
        let name = format!("db-{i}");
        cluster.database_secret(&name, url).await;
        cluster
            .create_policy(&format!(
                "apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                 spec:\n  interval: 1s\n  selector: {{matchLabels: {{app: {name}}}}}\n  database:\n    urlSecretRef: {{name: {name}, key: url}}\n  pool: {{maxSize: 5}}\n",
                ns = cluster.namespace
            ))
            .await;
        policies.push(name);
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("controller.log");
    let mut child = controller(&cluster, addr, &log);
    let api = cluster.api::<PoolPolicy>();
    let every_policy_has_a_database_condition = eventually(Duration::from_secs(60), || async {
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items.len() == corpus.len()
            && list.items.iter().all(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "DatabaseReachable"))
            })
    })
    .await;
    assert!(every_policy_has_a_database_condition);
    // A few more passes, so cached and repeated errors are logged too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (_, metrics) = http_get("127.0.0.1", addr.port(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("poolwarden_database_sample_duration_seconds"),
        "{metrics}"
    );
    assert_clean("/metrics", &metrics);

    let list = api.list(&ListParams::default()).await.unwrap();
    let statuses = serde_json::to_string_pretty(&list.items.iter().map(|p| &p.status).collect::<Vec<_>>()).unwrap();
    let reachable = list
        .items
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "DatabaseReachable" && c.status == "True")
            })
        })
        .count();
    assert_eq!(reachable, 5, "{statuses}");
    assert!(statuses.contains("sslmode must be one of"), "{statuses}");
    assert_clean("status", &statuses);

    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap();
    assert_clean("Events", &serde_json::to_string(&events.items).unwrap());

    // plan, with the policy's Secret and with --database-url, in both formats.
    let dir = tempfile::tempdir().unwrap();
    for (i, url) in corpus.iter().enumerate() {
        let file = dir.path().join(format!("db-{i}.yaml"));
        let policy = api.get(&format!("db-{i}")).await.unwrap();
        let mut doc = serde_json::to_value(&policy).unwrap();
        doc["metadata"] = serde_json::json!({"name": format!("db-{i}"), "namespace": cluster.namespace});
        doc.as_object_mut().unwrap().remove("status");
        std::fs::write(&file, serde_json::to_string(&doc).unwrap()).unwrap();
        for format in ["table", "json"] {
            for extra in [vec![], vec!["--database-url", url.as_str()]] {
                let out = tokio::process::Command::new(BIN)
                    .args(["plan", "-f"])
                    .arg(&file)
                    .arg("--kubeconfig")
                    .arg(&cluster.kubeconfig)
                    .args(["-o", format])
                    .args(&extra)
                    .env("RUST_LOG", "debug")
                    .output()
                    .await
                    .unwrap();
                let text = output_text(&out);
                assert!(text.contains("database"), "plan {i} {extra:?}: {text}");
                assert_clean(&format!("plan -o {format} db-{i} {extra:?}"), &text);
            }
        }
    }

    let _ = child.start_kill();
    let _ = child.wait().await;
    let logs = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(logs.contains("database not sampled"), "{logs}");
    assert!(logs.contains("DEBUG"), "debug logging is on");
    assert_clean("controller logs", &logs);
}
