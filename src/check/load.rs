//! Policies read from files, for every command that takes them (`plan -f`, `fly
//! --policies`): each file read as `check` reads it (regular files of at most
//! [`super::MAX_FILE_BYTES`], or standard input) and checked as `check` checks it,
//! so a command never acts on a policy `check` would refuse.

use std::path::{Path, PathBuf};

use kube::ResourceExt;
use serde_json::Value;

use super::{InputError, check_source, expand_paths, read_source};
use crate::policy::PoolPolicy;

/// Why the policy files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path could not be read at all (exit status 2, as for `check`).
    #[error(transparent)]
    Input(#[from] InputError),
    /// A policy is invalid (exit status 1).
    #[error("{0}")]
    Invalid(String),
}

impl LoadError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Input(_) => 2,
            LoadError::Invalid(_) => 1,
        }
    }
}

/// Every PoolPolicy document of one source, in order, once the source checks clean.
/// A document without a generation (a file has none) counts as the first one.
fn policies_of(path: &Path) -> Result<(String, Vec<PoolPolicy>), LoadError> {
    let (name, text) = read_source(path)?;
    let (_, findings) = check_source(&name, &text);
    if !findings.is_empty() {
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        return Err(LoadError::Invalid(lines.join("\n")));
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| LoadError::Invalid(format!("{name}: {e}")))?;
    let policies = docs
        .into_iter()
        .filter(|d| d["kind"] == "PoolPolicy")
        .map(|d| serde_json::from_value(d).map_err(|e| LoadError::Invalid(format!("{name}: {e}"))))
        .collect::<Result<Vec<PoolPolicy>, _>>()?;
    Ok((name, policies))
}

/// The first PoolPolicy of one source (`plan -f`), with the source's name.
pub fn first_policy(path: &Path) -> Result<(String, PoolPolicy), LoadError> {
    let (name, policies) = policies_of(path)?;
    match policies.into_iter().next() {
        Some(p) => Ok((name, p)),
        None => Err(LoadError::Invalid(format!("{name}: no PoolPolicy"))),
    }
}

/// Every PoolPolicy with a `fly` target under `paths` (files or directories),
/// sorted by name; each without a generation gets generation 1.
pub fn fly_policies(paths: &[PathBuf]) -> Result<Vec<PoolPolicy>, LoadError> {
    let (files, mut errors) = expand_paths(paths);
    if !errors.is_empty() {
        return Err(LoadError::Input(errors.swap_remove(0)));
    }
    let mut out = Vec::new();
    for file in files {
        let (_, policies) = policies_of(&file)?;
        out.extend(policies.into_iter().filter(|p| p.spec.fly.is_some()));
    }
    for p in &mut out {
        // A file has no generation: its status reads as of the first.
        p.metadata.generation.get_or_insert(1);
    }
    out.sort_by_key(|p| p.name_any());
    Ok(out)
}
