//! Running `kubectl` against a kubeconfig, for tests that drive the sandbox (or a real
//! cluster) with an independent client.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

/// Runs `kubectl --kubeconfig KUBECONFIG ARGS...` with `stdin` piped in; whether it
/// succeeded, and its stdout and stderr together.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("writing kubectl's stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl's output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
