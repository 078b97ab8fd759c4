//! Log rate limiting, so that one misbehaving peer cannot flood the logs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` events per `window`; counts the ones it refuses and reports them
/// with the next allowed event.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing `burst` events per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            burst,
            window,
            state: Mutex::new(State {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this event may be logged, `n` being the number of events
    /// suppressed since the last one logged; `None` if it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut s = crate::section::lock(&self.state);
        let now = Instant::now();
        let fresh = s
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
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
        LogLimiter::new(10, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_counts_what_it_drops() {
        let l = LogLimiter::new(2, Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l2 = LogLimiter::new(1, Duration::ZERO);
        assert_eq!(l2.allow(), Some(0));
        // A zero window starts a new window every time.
        assert_eq!(l2.allow(), Some(0));
    }
}
