//! Bounded polling.

use crate::error::{HarnessError, Result};
use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long `eventually` sleeps between attempts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `f` until it returns `Ok`, at most for `timeout`, sleeping `POLL_INTERVAL`
/// between attempts. The closure is always called at least once. On timeout the
/// error says what was awaited and carries the last failure, which is usually the
/// most useful line of a failing test.
pub fn eventually<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(HarnessError::Timeout {
                        what: what.to_owned(),
                        waited: start.elapsed(),
                        last: e.to_string(),
                    });
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_first_success() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(2), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(format!("n={n}")) }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_last_error() {
        let err = eventually(
            "never",
            Duration::from_millis(120),
            || -> Result<(), String> { Err("still no".into()) },
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("never"), "{msg}");
        assert!(msg.contains("still no"), "{msg}");
    }
}
