//! The daemon's one clock.
//!
//! Every component below the daemon is sans-IO and takes time as a number of
//! milliseconds. This module is where that number comes from: a monotonic clock based
//! on tokio's `Instant`, so that tests with paused time control it too.

use tokio::time::Instant;

/// A monotonic millisecond clock, starting at 1 when the daemon starts (0 is kept free
/// so that no real reading is ever mistaken for "never").
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Milliseconds since the origin, plus one.
    pub fn now_ms(&self) -> u64 {
        let ms = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
