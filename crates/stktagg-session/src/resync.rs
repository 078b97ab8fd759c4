//! The two resync state machines of a session, one per direction.
//!
//! A full resync is asked with RESYNC REQUEST and answered by a lesson: every
//! entry, then RESYNC FINISHED (the teacher was up to date) or RESYNC PARTIAL (it was
//! not), which the learner CONFIRMs. Both sides can be learner and teacher at once.

/// Where we stand as a learner: what we asked the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Learning {
    /// We have not asked yet.
    #[default]
    Idle,
    /// RESYNC REQUEST sent: waiting for FINISHED or PARTIAL.
    Asked,
    /// The peer answered PARTIAL: ask again at `retry_at` (milliseconds), if set,
    /// or when the caller or the policy says so.
    Partial {
        /// When to ask again.
        retry_at: Option<u64>,
    },
    /// The peer answered FINISHED: we hold what it holds.
    Finished,
}

impl Learning {
    /// The state after the peer ended its lesson, or `None` if we had not asked (a
    /// lesson nobody asked for changes nothing).
    pub fn on_end(self, finished: bool, now: u64, retry_ms: Option<u64>) -> Option<Learning> {
        if self != Learning::Asked {
            return None;
        }
        Some(if finished {
            Learning::Finished
        } else {
            Learning::Partial {
                retry_at: retry_ms.map(|d| now.saturating_add(d)),
            }
        })
    }

    /// Whether the retry timer of a PARTIAL has expired.
    pub fn retry_due(self, now: u64) -> bool {
        matches!(self, Learning::Partial { retry_at: Some(at) } if at <= now)
    }

    /// The retry deadline, if any.
    pub fn deadline(self) -> Option<u64> {
        match self {
            Learning::Partial { retry_at } => retry_at,
            _ => None,
        }
    }
}

/// Where we stand as a teacher: what the peer asked us.
///
/// A lesson goes in this order: the peer's own entries taught back (a restarted
/// HAProxy node gets its counts back first, so its own pushes start from them), then
/// every table we publish to it, then FINISHED or PARTIAL. Live changes wait until
/// the lesson's end has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Teaching {
    /// Nothing asked, or the last lesson is confirmed.
    #[default]
    Idle,
    /// Sending the peer's own entries back.
    TeachBack,
    /// Sending our tables.
    Tables,
    /// FINISHED or PARTIAL sent; the peer's CONFIRM has not arrived.
    Sent,
}

impl Teaching {
    /// Whether a lesson is being written (live changes wait).
    pub fn in_progress(self) -> bool {
        matches!(self, Teaching::TeachBack | Teaching::Tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lesson_nobody_asked_for_changes_nothing() {
        for s in [
            Learning::Idle,
            Learning::Finished,
            Learning::Partial { retry_at: None },
        ] {
            assert_eq!(s.on_end(true, 0, None), None);
        }
    }

    #[test]
    fn partial_schedules_the_retry() {
        let s = Learning::Asked.on_end(false, 100, Some(5_000));
        assert_eq!(
            s,
            Some(Learning::Partial {
                retry_at: Some(5_100)
            })
        );
        let s = s.unwrap_or_default();
        assert!(!s.retry_due(5_099));
        assert!(s.retry_due(5_100));
        assert_eq!(
            Learning::Asked.on_end(true, 100, Some(5)),
            Some(Learning::Finished)
        );
    }
}
