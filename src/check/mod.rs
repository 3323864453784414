//! `poolwarden check`: validates PoolPolicy documents the way the API server and the
//! controller would, before GitOps applies them, and says where each problem is.
//!
//! Every document whose `kind` is `PoolPolicy` goes through three layers, all of which
//! report every problem they find: the CRD's structural schema (types, enums,
//! patterns, required fields, and unknown fields with a did-you-mean), typed
//! deserialization, and the semantic rules of [`crate::policy::validate`]. Other kinds
//! are skipped silently because GitOps repositories mix them.

pub mod budget;
pub mod load;
mod metadata;
mod schema;
pub mod yaml_tree;

/// The structural layer alone (for tests comparing other validators with it).
pub use schema::structural_problems;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::policy::{PoolPolicy, Problem, validate};

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: u64,
    /// Dotted field path from the document root; empty for problems of the whole text.
    pub path: String,
    pub message: String,
}

impl Finding {
    /// The finding as a warning line: `file:line: path: warning: message`.
    pub fn as_warning(&self) -> String {
        format!("{}:{}: {}: warning: {}", self.file, self.line, self.path, self.message)
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.line, self.path, self.message)
        }
    }
}

/// A source that could not be checked at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("{path}: not a text file (not UTF-8)")]
    NotText { path: String },
    #[error("{path}: not a regular file ({kind}); policies are read from regular files and standard input")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: larger than 4 MiB, the most poolwarden reads from one policy file")]
    TooLarge { path: String },
}

/// The most `check`, `plan -f` and `fly --policies` read from one file (or from
/// standard input). A policy is a few kilobytes; a GitOps repository's largest
/// multi-document manifest is well below this, and the YAML parser's own budgets
/// (see [`yaml_tree`]) then bound the work.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads one policy source: `-` is standard input, anything else must be a regular
/// file. A FIFO, a device or a socket is refused before a byte is read (opened
/// non-blocking, so a FIFO nobody writes to cannot hang the caller), and no source
/// is read past [`MAX_FILE_BYTES`].
pub fn read_source(path: &Path) -> Result<(String, String), InputError> {
    use std::io::Read;
    let (name, mut reader): (String, Box<dyn Read>) = if path.as_os_str() == "-" {
        ("<stdin>".to_owned(), Box::new(std::io::stdin()))
    } else {
        let name = path.display().to_string();
        let unreadable = |source| InputError::Unreadable {
            path: name.clone(),
            source,
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(unreadable)?
        };
        // The type of what was opened, not of what the path named a moment before.
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            let kind = if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a file"
            };
            return Err(InputError::NotRegular { path: name, kind });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(InputError::TooLarge { path: name });
        }
        (name, Box::new(file))
    };
    let mut bytes = Vec::new();
    // One byte more than the cap tells "exactly at the cap" from "over it".
    if let Err(source) = reader.by_ref().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return Err(InputError::Unreadable { path: name, source });
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(InputError::TooLarge { path: name });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((name, text)),
        Err(_) => Err(InputError::NotText { path: name }),
    }
}

/// The result of checking some sources.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Valid values the policy's pool library would replace, ignore or misread
    /// ([`crate::policy::warnings`]): printed, never a failure.
    pub warnings: Vec<Finding>,
    pub input_errors: Vec<InputError>,
    pub policies_checked: usize,
}

/// Expands paths: files as given, directories recursively to their `*.yaml`/`*.yml`
/// files in a stable order, `-` as standard input.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<InputError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" || !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        collect_yaml_files(path, &mut files, &mut errors);
    }
    (files, errors)
}

fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(InputError::Unreadable {
                path: dir.display().to_string(),
                source,
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_yaml_files(&path, files, errors);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(path);
        }
    }
}

/// Checks files (and `-` for standard input).
pub fn check_paths(paths: &[PathBuf]) -> Report {
    check_paths_keeping(paths).0
}

/// [`check_paths`], with the texts read (name, text): standard input can be read
/// only once, and `check --budget` reads the texts again.
pub fn check_paths_keeping(paths: &[PathBuf]) -> (Report, Vec<(String, String)>) {
    let (files, input_errors) = expand_paths(paths);
    let mut report = Report {
        input_errors,
        ..Report::default()
    };
    let mut texts = Vec::new();
    for file in files {
        match read_source(&file) {
            Err(e) => report.input_errors.push(e),
            Ok((name, text)) => {
                let checked = check_text(&name, &text);
                report.policies_checked += checked.policies;
                report.findings.extend(checked.findings);
                report.warnings.extend(checked.warnings);
                texts.push((name, text));
            }
        }
    }
    (report, texts)
}

/// Checks every PoolPolicy document in one YAML text; returns how many policies it
/// checked and the problems found.
pub fn check_source(file: &str, source: &str) -> (usize, Vec<Finding>) {
    let checked = check_text(file, source);
    (checked.policies, checked.findings)
}

/// What checking one text found.
#[derive(Debug, Default)]
pub struct Checked {
    pub policies: usize,
    pub findings: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// [`check_source`], with the warnings of the valid policies.
pub fn check_text(file: &str, source: &str) -> Checked {
    let documents = match yaml_tree::parse_documents(source) {
        Ok(documents) => documents,
        Err(e) => {
            let message = if e.over_budget {
                format!("too large to check: {}", e.message)
            } else {
                format!("not valid YAML: {}", e.message)
            };
            return Checked {
                findings: vec![Finding {
                    file: file.to_owned(),
                    line: e.line,
                    path: String::new(),
                    message,
                }],
                ..Checked::default()
            };
        }
    };
    let schema = crate::crd::openapi_schema();
    let mut checked = 0;
    let mut findings = Vec::new();
    let mut warnings = Vec::new();
    for doc in documents {
        if doc.value.get("kind").and_then(Value::as_str) != Some("PoolPolicy") {
            continue;
        }
        checked += 1;
        let locate = |p: Problem| Finding {
            file: file.to_owned(),
            line: doc.line_of(&p.path),
            path: p.path,
            message: p.message,
        };
        let mut problems: Vec<Finding> = policy_problems(schema, &doc.value).into_iter().map(locate).collect();
        problems.sort_by_key(|f| f.line);
        if problems.is_empty()
            && let Ok(policy) = serde_json::from_value::<PoolPolicy>(doc.value.clone())
        {
            warnings.extend(crate::policy::warnings::warnings(&policy.spec).into_iter().map(locate));
        }
        findings.extend(problems);
    }
    Checked {
        policies: checked,
        findings,
        warnings,
    }
}

/// Every problem of one PoolPolicy document, structural first, then semantic; a
/// semantic problem on a field that already has a structural one is not repeated.
pub fn policy_problems(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let expected = format!("{}/v1alpha1", crate::policy::GROUP);
    if api_version != Some(expected.as_str()) {
        problems.push(Problem {
            path: "apiVersion".into(),
            message: format!("must be {expected}"),
        });
    }
    problems.extend(schema::structural_problems(schema, value));
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        problems.push(Problem {
            path: "metadata.name".into(),
            message: "required field is missing".into(),
        });
    }
    problems.extend(metadata::metadata_problems(value));
    let structural = problems.len();
    // Semantic rules still run on what is left once the structurally broken fields are
    // taken out, so one pass reports every problem it can.
    let mut repaired = value.clone();
    for problem in &problems {
        remove_path(&mut repaired, &problem.path);
    }
    match serde_path_to_error::deserialize::<_, PoolPolicy>(&repaired) {
        // A type error the schema walk did not already name (it names every one it can).
        Err(e) if structural == 0 => problems.push(Problem {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        }),
        Err(_) => {}
        Ok(policy) => {
            if let Err(semantic) = validate(&policy.spec) {
                let already = |p: &Problem| problems[..structural].iter().any(|s| s.path == p.path);
                let fresh: Vec<Problem> = semantic.into_iter().filter(|p| !already(p)).collect();
                problems.extend(fresh);
            }
        }
    }
    problems
}

/// Removes the field at a dotted path (`a.b[2].c`), if present.
fn remove_path(value: &mut Value, path: &str) {
    let mut segments: Vec<&str> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            segments.push(&rest[..open]);
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                segments.push(&rest[1..close]);
                rest = &rest[close + 1..];
            }
        } else {
            segments.push(rest);
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut current = value;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(*segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Value::Object(map) = current {
        map.remove(*last);
    }
}
