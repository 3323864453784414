//! Pod IPs: each pod gets its own loopback address 127.0.0.x (Linux routes all
//! of 127/8 to `lo`), so pods can all listen on the same port. The pool is
//! process-wide, and an address whose ports are taken by someone else on the
//! machine is skipped.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn in_use() -> &'static Mutex<HashSet<u8>> {
    static IN_USE: OnceLock<Mutex<HashSet<u8>>> = OnceLock::new();
    IN_USE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Takes a free address whose `ports` can be bound. 127.0.0.1 is never handed out.
pub fn allocate(ports: &[u16]) -> Option<Ipv4Addr> {
    let mut used = in_use().lock().unwrap_or_else(|e| e.into_inner());
    let start: u8 = rand::random_range(2..=254);
    for offset in 0..253u16 {
        let x = (2 + (start as u16 - 2 + offset) % 253) as u8;
        if used.contains(&x) {
            continue;
        }
        let ip = Ipv4Addr::new(127, 0, 0, x);
        if ports.iter().all(|p| TcpListener::bind((ip, *p)).is_ok()) {
            used.insert(x);
            return Some(ip);
        }
    }
    None
}

pub fn release(ip: Ipv4Addr) {
    in_use()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ip.octets()[3]);
}
