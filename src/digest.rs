//! Short, stable digests: the first 8 bytes of SHA-256, in hex. Stable across builds
//! and processes (unlike std's hasher), so a digest recorded in a status compares
//! equal after a controller restart.

pub fn short(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}
