//! Test certificates made with the openssl command line: a CA, a server certificate
//! for IP 127.0.0.1 signed by it, and an unrelated CA (tests/observe_tls.rs,
//! tests/image.rs).

#![allow(dead_code)]

use std::{path::Path, process::Command};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA, a server certificate for IP 127.0.0.1 signed by it, and an unrelated CA.
pub fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ca in ["ca", "other-ca"] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ],
        );
    }
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    // PostgreSQL runs as the postgres user and refuses a key others can read.
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(d).status();
    let _ = Command::new("chmod").arg("755").arg(d).status();
    let _ = Command::new("chmod").arg("600").arg(d.join("server.key")).status();
    dir
}
