//! `sslmode` and `sslrootcert` against a throwaway PostgreSQL serving TLS with a
//! certificate from a test CA (made with the openssl command line), `system`
//! (libpq 16+: the system trust store) included.

mod support;

use std::process::Command;

use poolwarden::observe::{conninfo::ConnInfo, postgres::Sampler};
use support::{throwaway_pg::ThrowawayPg, tls::certificates};

async fn sample(url: &str) -> Result<usize, String> {
    let mut sampler = Sampler::new(url).map_err(|e| e.to_string())?;
    sampler
        .sample()
        .await
        .map(|s| s.backends.len())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sslmodes_keep_their_libpq_meaning() {
    let certs = certificates();
    let d = certs.path().display();
    let pg = ThrowawayPg::start(&[
        "ssl=on",
        &format!("ssl_cert_file={d}/server.crt"),
        &format!("ssl_key_file={d}/server.key"),
    ]);
    let at = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/postgres?{query}", pg.port);

    // require: encrypted, shown by the server itself.
    let info = ConnInfo::parse(&at("127.0.0.1", "sslmode=require")).unwrap();
    let mode = &info.identity.tls;
    let (client, connection) = info.config().connect(mode.connector().unwrap().unwrap()).await.unwrap();
    tokio::spawn(connection);
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "sslmode=require must encrypt");

    let ca = format!("{d}/ca.crt");
    let other = format!("{d}/other-ca.crt");
    assert!(
        sample(&at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")))
            .await
            .is_ok()
    );
    // The certificate names 127.0.0.1 only: verify-full refuses "localhost", verify-ca does not check names.
    let wrong_name = sample(&at("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .unwrap_err();
    assert!(wrong_name.contains("cannot connect"), "{wrong_name}");
    assert!(
        sample(&at("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")))
            .await
            .is_ok()
    );
    // A certificate from another CA is refused by verify-ca and verify-full alike.
    assert!(
        sample(&at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}")))
            .await
            .is_err()
    );
    assert!(
        sample(&at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={other}")))
            .await
            .is_err()
    );
    // prefer and disable still connect.
    assert!(sample(&at("127.0.0.1", "sslmode=prefer")).await.is_ok());
    assert!(sample(&at("127.0.0.1", "sslmode=disable")).await.is_ok());
}

/// `inspect` in its own process, so the trust store it finds is the one the test
/// names through `SSL_CERT_FILE` (read the way OpenSSL, and so libpq, reads it).
fn inspect_with_store(url: &str, store: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["inspect", "--database-url", url])
        .env("SSL_CERT_FILE", store)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap()
}

#[tokio::test]
async fn sslrootcert_system_verifies_the_full_chain_and_name_against_the_system_store() {
    let certs = certificates();
    let d = certs.path().display();
    let pg = ThrowawayPg::start(&[
        "ssl=on",
        &format!("ssl_cert_file={d}/server.crt"),
        &format!("ssl_key_file={d}/server.key"),
    ]);
    let at = |host: &str| format!("postgres://postgres@{host}:{}/postgres?sslrootcert=system", pg.port);
    let ok = inspect_with_store(&at("127.0.0.1"), &format!("{d}/ca.crt"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // verify-full is implied: the name is checked...
    let wrong_name = inspect_with_store(&at("localhost"), &format!("{d}/ca.crt"));
    assert_eq!(wrong_name.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_name.stderr).contains("cannot connect"));
    // ...and a store without the server's CA is refused.
    let untrusted = inspect_with_store(&at("127.0.0.1"), &format!("{d}/other-ca.crt"));
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    // libpq 16 refuses a weaker sslmode with the system store.
    let weak = inspect_with_store(&format!("{}&sslmode=require", at("127.0.0.1")), &format!("{d}/ca.crt"));
    assert_eq!(weak.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&weak.stderr)
            .contains("weak sslmode require may not be used with sslrootcert=system (use verify-full)")
    );
}
