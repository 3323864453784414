//! A backend's last statement (`pg_stat_activity.query`) made safe to show: literals
//! replaced by `$n` as `pg_stat_statements` does, comments dropped, whitespace
//! collapsed — and the sqlcommenter tags of its comments kept, because they name the
//! route or controller that ran it.
//!
//! Tokenising SQL by hand goes wrong on dollar quotes, escape strings and nested
//! comments, and a mistake there leaks a literal; so the text is tokenised by
//! `sqlparser`'s PostgreSQL tokenizer. It is pure Rust (a few seconds of build,
//! where `pg_query` needs libclang and builds PostgreSQL's parser in C), and — unlike a
//! parser — it works on the text `pg_stat_activity` cuts at
//! `track_activity_query_size`: on an error (a string literal cut in half) the
//! tokens before it are kept and the rest is replaced by `…`, so nothing after the
//! cut can leak.

use std::collections::BTreeMap;

use sqlparser::{
    dialect::PostgreSqlDialect,
    tokenizer::{Token, Tokenizer, Whitespace},
};

use super::sqlcommenter;

pub use crate::observation::{Statement, fingerprint};

/// Normalises `query`; `None` for an empty one (a backend that never ran a statement).
pub fn normalize(query: &str) -> Option<Statement> {
    if query.trim().is_empty() {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let mut tokens = Vec::new();
    // On an error the buffer holds every token read before it (sqlparser's contract).
    let cut = Tokenizer::new(&dialect, query)
        .with_unescape(false)
        .tokenize_with_location_into_buf(&mut tokens)
        .is_err();
    let mut next = first_free_placeholder(tokens.iter().map(|t| &t.token));
    let mut text = String::with_capacity(query.len().min(256));
    let mut tags = BTreeMap::new();
    let mut space = false;
    for t in &tokens {
        let piece = match &t.token {
            Token::Whitespace(Whitespace::MultiLineComment(comment)) => {
                tags.extend(sqlcommenter::tags(comment));
                space = true;
                continue;
            }
            Token::Whitespace(_) => {
                space = true;
                continue;
            }
            Token::EOF => continue,
            token if is_literal(token) => {
                next += 1;
                format!("${next}")
            }
            Token::Word(_) | Token::Placeholder(_) => t.token.to_string(),
            Token::CopyData { .. } => "…".to_owned(),
            // Operators and punctuation. Anything else that renders with a quote or a
            // digit is treated as a literal: a token kind this code does not know must
            // not print its content.
            other => {
                let s = other.to_string();
                if s.chars().any(|c| c.is_ascii_digit() || c == '\'' || c == '"') {
                    next += 1;
                    format!("${next}")
                } else {
                    s
                }
            }
        };
        if space && !text.is_empty() {
            text.push(' ');
        }
        space = false;
        text.push_str(&piece);
    }
    if cut {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push('…');
    }
    Some(Statement { text, tags })
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// Literals are numbered after the statement's own highest `$n`, as
/// `pg_stat_statements` numbers them, so `$1` keeps meaning the app's first parameter.
fn first_free_placeholder<'a>(tokens: impl Iterator<Item = &'a Token>) -> u32 {
    tokens
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<u32>().ok()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(q: &str) -> String {
        normalize(q).map(|s| s.text).unwrap_or_default()
    }

    #[test]
    fn literals_become_numbered_placeholders() {
        assert_eq!(text("select 1"), "select $1");
        assert_eq!(
            text("SELECT odds.*  FROM odds\n WHERE id = 42 AND name = 'hunter2'"),
            "SELECT odds.* FROM odds WHERE id = $1 AND name = $2"
        );
        assert_eq!(
            text("UPDATE t SET v = $1 WHERE k = E'x\\'y' OR k = $$dollar$$"),
            "UPDATE t SET v = $1 WHERE k = $2 OR k = $3"
        );
        assert_eq!(text("SELECT -1.5e3, X'ff', B'01'"), "SELECT -$1, $2, $3");
    }

    #[test]
    fn comments_are_dropped_and_their_sqlcommenter_tags_kept() {
        let s = normalize("SELECT * FROM bets WHERE id = 7 /*controller='bets',route='%2Fbets%2F%3Cid%3E'*/ -- x 9")
            .unwrap();
        assert_eq!(s.text, "SELECT * FROM bets WHERE id = $1");
        assert_eq!(
            s.tags,
            BTreeMap::from([
                ("controller".to_owned(), "bets".to_owned()),
                ("route".to_owned(), "/bets/<id>".to_owned())
            ])
        );
        let plain = normalize("SELECT 1 /* password 'swordfish' */").unwrap();
        assert_eq!(plain.text, "SELECT $1");
        assert!(plain.tags.is_empty());
    }

    #[test]
    fn a_statement_cut_inside_a_literal_keeps_what_came_before_and_nothing_after() {
        let s = text("SELECT * FROM users WHERE token = 'abcdef-secret-cut-he");
        assert_eq!(s, "SELECT * FROM users WHERE token = …");
        assert!(!s.contains("secret"));
    }

    #[test]
    fn empty_statements_have_no_text_and_fingerprints_are_stable() {
        assert_eq!(normalize("  "), None);
        assert_eq!(fingerprint("select $1"), fingerprint("select $1"));
        assert_ne!(fingerprint("select $1"), fingerprint("select $2"));
        assert_eq!(fingerprint("select $1").len(), 16);
    }
}
