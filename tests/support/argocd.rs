//! Runs the Argo CD health check (integrations/argocd/.../health.lua) under Debian's
//! `lua5.1`, as Argo CD's gopher-lua (Lua 5.1) does: the object is the global `obj`.
#![allow(dead_code)]

use std::{io::Write, process::Command};

use serde_json::Value;

pub const HEALTH_LUA: &str = "integrations/argocd/poolwarden.io/PoolPolicy/health.lua";

/// A JSON value as a Lua table constructor (Argo CD hands the script the object
/// decoded the same way: objects and arrays become tables, null becomes nil).
pub fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&Value::String(k.clone())), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The script's (status, message) for the object.
pub fn health(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(HEALTH_LUA).unwrap_or_else(|e| panic!("{HEALTH_LUA}: {e}"));
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(obj)
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(program.as_bytes()).expect("write");
    let out = Command::new("lua5.1").arg(file.path()).output().unwrap_or_else(|e| {
        panic!(
            "lua5.1 could not be run ({e}). It is required, not optional: install Debian's \
             `lua5.1` package (apt-get install -y lua5.1); Argo CD's gopher-lua is Lua 5.1"
        )
    });
    assert!(
        out.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}
