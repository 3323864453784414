//! A YAML document read into JSON, remembering the line every node came from.
//!
//! `check` reports problems as `file:line: field.path: message`; the typed
//! deserializer and the semantic rules only know field paths, so this index maps a
//! dotted path (`spec.pool.minSize`, `spec.selector.matchExpressions[0].operator`)
//! back to its line.

use std::{collections::BTreeMap, fmt};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// A YAML node with the line of every node beneath it.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

/// One parsed document: its JSON value and the line of each field path.
#[derive(Debug, Default)]
pub struct Document {
    pub value: Value,
    /// Line (1-based) of the document's first node.
    pub line: u64,
    lines: BTreeMap<String, u64>,
}

impl Document {
    /// The line of `path`, or of its nearest ancestor that exists in the source (a
    /// missing field is reported where its parent is).
    pub fn line_of(&self, path: &str) -> u64 {
        let mut current = path;
        loop {
            if let Some(line) = self.lines.get(current) {
                return *line;
            }
            match current.rfind(['.', '[']) {
                Some(cut) => current = &current[..cut],
                None => return self.line,
            }
        }
    }
}

/// Why a source could not be read as YAML, with the line where reading stopped.
#[derive(Debug)]
pub struct YamlError {
    pub line: u64,
    pub message: String,
    /// The text may be valid YAML, but it exceeds one of the parser's budgets.
    pub over_budget: bool,
}

/// Reads every document of a YAML stream. Duplicate keys are errors: Kubernetes
/// would keep one of them silently, so the author's intent is unknowable.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, YamlError> {
    let nodes: Vec<Spanned<Node>> = serde_saphyr::from_str_multiple(source).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1).max(1);
        let (message, over_budget) = match e.without_snippet() {
            serde_saphyr::Error::Budget { breach, .. } => (budget_message(breach), true),
            _ => (first_line(&e.to_string()), false),
        };
        YamlError {
            line,
            message,
            over_budget,
        }
    })?;
    nodes
        .into_iter()
        .filter(|n| !matches!(n.value, Node::Null))
        .map(|node| {
            let mut doc = Document {
                line: node.referenced.line().max(1),
                ..Document::default()
            };
            doc.value = into_json(node, "", &mut doc.lines)?;
            Ok(doc)
        })
        .collect()
}

/// A parser budget, in the author's words. The budgets (serde-saphyr's defaults)
/// bound the work a hostile file can cause; a real policy file is far inside them.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::Budget::default();
    let n = thousands;
    match breach {
        B::Documents { .. } => format!(
            "more than {} documents in one file: split it into several files",
            n(limits.max_documents)
        ),
        B::Nodes { .. } => format!(
            "more than {} YAML nodes (mappings, lists and values) in one file: split it into several files",
            n(limits.max_nodes)
        ),
        B::Events { .. } => format!("more than {} YAML parser events in one file", n(limits.max_events)),
        B::Depth { .. } => format!("nested more than {} levels deep", limits.max_depth),
        B::Aliases { .. } => format!("more than {} aliases (*name) in one file", n(limits.max_aliases)),
        B::Anchors { .. } => format!("more than {} anchors (&name) in one file", n(limits.max_anchors)),
        B::ScalarBytes { .. } => format!(
            "more than {} MiB of values in one file",
            limits.max_total_scalar_bytes / (1024 * 1024)
        ),
        B::MergeKeys { .. } => format!("more than {} merge keys (<<) in one file", n(limits.max_merge_keys)),
        B::AliasAnchorRatio { .. } => format!(
            "aliases used more than {} times per anchor (a YAML alias bomb?)",
            limits.alias_anchor_ratio_multiplier
        ),
        B::RecordedAnchorEvents { .. } | B::RecordedAnchorBytes { .. } => {
            "anchors expanded into too many copies (a YAML alias bomb?)".to_owned()
        }
        B::InputBytes { .. } => "larger than the YAML parser reads".to_owned(),
        B::SequenceUnbalanced => "unbalanced YAML structure (truncated?)".to_owned(),
        _ => "beyond the YAML parser's resource limits".to_owned(),
    }
}

/// `1024` as `1,024`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The parser's message without the location it also carries separately, and
/// without advice addressed to programmers using the library.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.split_once(": ") {
        Some((location, rest)) if location.starts_with("line ") => rest,
        _ => line,
    };
    line.split(", set DuplicateKeyPolicy").next().unwrap_or(line).to_owned()
}

fn into_json(node: Spanned<Node>, path: &str, lines: &mut BTreeMap<String, u64>) -> Result<Value, YamlError> {
    let line = node.referenced.line();
    if !path.is_empty() {
        lines.insert(path.to_owned(), line);
    }
    Ok(match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::UInt(u) => Value::Number(u.into()),
        Node::Float(f) => Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| into_json(item, &format!("{path}[{i}]"), lines))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key_line = key.referenced.line();
                let name = match key.value {
                    Node::Str(s) => s,
                    Node::Int(i) => i.to_string(),
                    Node::UInt(u) => u.to_string(),
                    Node::Bool(b) => b.to_string(),
                    other => {
                        return Err(YamlError {
                            line: key_line,
                            message: format!("unsupported mapping key {other:?}"),
                            over_budget: false,
                        });
                    }
                };
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                if map.contains_key(&name) {
                    return Err(YamlError {
                        line: key_line,
                        message: format!("duplicate key `{name}`"),
                        over_budget: false,
                    });
                }
                let value = into_json(value, &child, lines)?;
                // A key's own line is where an author looks, even for a nested block value.
                lines.insert(child, key_line);
                map.insert(name, value);
            }
            Value::Object(map)
        }
    })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        u64::try_from(v)
            .map(Node::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Err(E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_line_of_every_field() {
        let docs = parse_documents("a: 1\nb:\n  c: x\n  d:\n  - e: 2\n---\nkind: Other\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_of("a"), 1);
        assert_eq!(docs[0].line_of("b.c"), 3);
        assert_eq!(docs[0].line_of("b.d[0].e"), 5);
        assert_eq!(docs[0].line_of("b.missing"), 2);
        assert_eq!(docs[1].value["kind"], "Other");
        assert_eq!(docs[1].line_of("kind"), 7);
    }

    #[test]
    fn keeps_yaml_scalar_types() {
        let docs = parse_documents("i: -3\nu: 4\nf: 1.5\ns: \"5\"\nb: true\nn: ~\n").unwrap();
        let v = &docs[0].value;
        assert_eq!(v["i"], -3);
        assert_eq!(v["u"], 4);
        assert_eq!(v["f"], 1.5);
        assert_eq!(v["s"], "5");
        assert_eq!(v["b"], true);
        assert!(v["n"].is_null());
    }

    #[test]
    fn a_duplicated_key_is_an_error_on_its_line() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }

    #[test]
    fn text_that_is_not_yaml_reports_a_line() {
        let err = parse_documents("a: 1\nb: [unclosed\nc: {\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }
}
