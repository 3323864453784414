//! The pinned supply-chain tools (`.ci/tool-versions`): built once per machine by
//! `.ci/ensure-tool` into a cache outside the clone, found here by name.

#![allow(dead_code)]

use std::{path::PathBuf, process::Command};

/// The path of a pinned tool, building it first when the cache lacks it (minutes, once).
pub fn ensure_tool(name: &str) -> PathBuf {
    let out = Command::new("bash")
        .args([".ci/ensure-tool", name])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run .ci/ensure-tool {name}: {e}"));
    assert!(
        out.status.success(),
        ".ci/ensure-tool {name} failed ({}); its output is above",
        out.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        ".ci/ensure-tool {name} printed {path:?}, which is not a file"
    );
    path
}
