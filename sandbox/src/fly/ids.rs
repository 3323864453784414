//! Identifiers shaped like Fly's: 14-hex-digit machine ids, ULID instance ids
//! and lease versions, 12-hex-digit lease nonces, "adjective-noun-1234" names.

use std::hash::{DefaultHasher, Hash, Hasher};

/// A machine id: 14 lowercase hex digits, like `3d8d413b29d089`.
pub fn machine_id() -> String {
    format!("{:014x}", rand::random::<u64>() & ((1 << 56) - 1))
}

/// A lease nonce: 12 lowercase hex digits, like `5c35f65c9f95`.
pub fn nonce() -> String {
    format!("{:012x}", rand::random::<u64>() & ((1 << 48) - 1))
}

/// A ULID (26 Crockford base32 characters, time-ordered), as Fly uses for
/// `instance_id`, lease versions and event ids.
pub fn ulid() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    let value = ((millis & ((1u128 << 48) - 1)) << 80) | random;
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// A generated machine name, like `aged-wind-2649`.
pub fn name() -> String {
    const ADJECTIVES: &[&str] = &[
        "aged",
        "bitter",
        "bold",
        "calm",
        "damp",
        "dry",
        "empty",
        "frosty",
        "late",
        "muddy",
        "polished",
        "quiet",
        "red",
        "silent",
        "snowy",
        "summer",
        "twilight",
        "weathered",
        "young",
    ];
    const NOUNS: &[&str] = &[
        "bird", "brook", "dawn", "dust", "field", "flower", "forest", "grass", "lake", "leaf", "moon", "mountain",
        "pond", "rain", "river", "sea", "star", "thunder", "wind",
    ];
    format!(
        "{}-{}-{:04}",
        ADJECTIVES[rand::random_range(0..ADJECTIVES.len())],
        NOUNS[rand::random_range(0..NOUNS.len())],
        rand::random_range(0..10_000u32)
    )
}

/// A digest of a secret's value, so a list shows when a value changed without
/// showing it. (Fly's own digest algorithm is not documented; this is stable
/// within a process and differs for different values.)
pub fn digest(value: &str) -> String {
    let part = |salt: &str| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        value.hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", part("fly-secret-a"), part("fly-secret-b"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = machine_id();
        assert_eq!(id.len(), 14);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(nonce().len(), 12);
        let u = ulid();
        assert_eq!(u.len(), 26);
        assert!(u.starts_with('0'), "{u}: ULIDs of this century start with 0");
        assert!(ulid() != u);
        assert_eq!(digest("a"), digest("a"));
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(name().split('-').count(), 3);
    }
}
