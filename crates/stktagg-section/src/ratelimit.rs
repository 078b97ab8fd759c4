//! Log rate limiting, so that one misbehaving peer cannot flood the logs.

use std::sync::Mutex;

/// Allows `burst` events per window of `window_ms` milliseconds; counts the ones it
/// refuses and reports them with the next allowed event. Time is passed in.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    window_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<u64>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing `burst` events per `window_ms`.
    pub const fn new(burst: u32, window_ms: u64) -> Self {
        LogLimiter {
            burst,
            window_ms,
            state: Mutex::new(State {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if an event at `now` (milliseconds) may be logged, `n` being the
    /// number of events suppressed since the last one logged; `None` if it must be
    /// dropped.
    pub fn allow(&self, now: u64) -> Option<u64> {
        let mut s = crate::lock(&self.state);
        let fresh = s
            .window_start
            .is_none_or(|start| now.saturating_sub(start) >= self.window_ms);
        if fresh {
            s.window_start = Some(now);
            s.used = 0;
        }
        if s.used < self.burst {
            s.used += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimiter {
    /// Ten lines a minute.
    fn default() -> Self {
        LogLimiter::new(10, 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_counts_what_it_drops() {
        let l = LogLimiter::new(2, 1_000);
        assert_eq!(l.allow(0), Some(0));
        assert_eq!(l.allow(10), Some(0));
        assert_eq!(l.allow(20), None);
        assert_eq!(l.allow(30), None);
        assert_eq!(l.allow(1_000), Some(2));
    }
}
