//! Free loopback ports and per-test scratch directories.
//!
//! Tests run in parallel, inside one process and across test binaries, so nothing
//! uses fixed ports: each port comes from the kernel (bind port 0), and a
//! process-wide set makes sure one test binary never hands the same port out twice
//! even after the probe socket is closed.

use crate::error::{HarnessError, Result};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback address with a port that was free a moment ago. The port is released
/// before returning, so a process such as `haproxy` can bind it.
pub fn free_addr() -> Result<SocketAddr> {
    for _ in 0..64 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding a probe socket on 127.0.0.1:0", e))?;
        let addr = l
            .local_addr()
            .map_err(|e| HarnessError::io("reading the probe socket's address", e))?;
        // A poisoned lock only means another test panicked while holding it; the set
        // is still usable.
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return Ok(addr);
        }
    }
    Err(HarnessError::Unexpected(
        "the kernel kept returning ports already handed out".into(),
    ))
}

/// A listener on a fresh loopback port, kept open: for a mock peer that HAProxy
/// dials, so that the port cannot be taken between picking and listening.
pub fn listener() -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding a listener on 127.0.0.1:0", e))
}

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory under the system temp dir, unique per process and call.
/// Its path stays short because unix socket paths are limited to 107 bytes.
pub fn scratch_dir(label: &str) -> Result<PathBuf> {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let short: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    let dir = std::env::temp_dir().join(format!("stktagg-{}-{n}-{short}", std::process::id()));
    if dir.exists() {
        remove_dir(&dir);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// Removes a scratch directory, ignoring errors: leftover temp files must not fail a
/// test that otherwise passed.
pub fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addrs_are_distinct_and_bindable() {
        let a = free_addr().unwrap();
        let b = free_addr().unwrap();
        assert_ne!(a.port(), b.port());
        assert!(a.ip().is_loopback());
        TcpListener::bind(a).unwrap();
    }

    #[test]
    fn scratch_dirs_are_fresh() {
        let a = scratch_dir("x y/z").unwrap();
        let b = scratch_dir("x y/z").unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir());
        assert!(a.to_string_lossy().len() < 80);
        remove_dir(&a);
        remove_dir(&b);
        assert!(!a.exists());
    }
}
