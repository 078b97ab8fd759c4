//! The faults of a run, drawn from its seed: kills and restarts (with or without
//! the process's state), partitions (cut or blackhole) and heals, added delays,
//! slow readers, duplicate sessions. At most [`MAX_FAULTS`] per run, all of them
//! over by the end of the fault window; a quiet period follows.
//!
//! The plan is drawn from its own random stream, before the run: dropping a fault
//! (to shrink a failing run) leaves the others exactly as they were.

use crate::net::Partition;
use crate::rng::Rng;
use std::fmt;

/// The most faults in one run.
pub const MAX_FAULTS: u64 = 6;
/// How long a flap's cut lasts.
pub const FLAP_MS: u64 = 500;
/// Faults start between these offsets from the start of the run (ms).
pub const WINDOW_MS: (u64, u64) = (1_000, 20_000);

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `proc` dies at `at` and starts again `down_ms` later.
    Kill {
        /// When.
        at: u64,
        /// For how long.
        down_ms: u64,
        /// Who.
        proc: usize,
        /// It comes back with its tables (a node's reload; an aggregator whose
        /// store survived) rather than empty.
        keep_state: bool,
    },
    /// Nothing passes between `a` and `b` for `ms`.
    Partition {
        /// When.
        at: u64,
        /// For how long.
        ms: u64,
        /// One side.
        a: usize,
        /// The other.
        b: usize,
        /// Connections are reset at once (else they stall).
        cut: bool,
    },
    /// The link between `a` and `b` is `extra_ms` slower for `ms`.
    Delay {
        /// When.
        at: u64,
        /// For how long.
        ms: u64,
        /// One side.
        a: usize,
        /// The other.
        b: usize,
        /// Added latency.
        extra_ms: u64,
    },
    /// `proc` reads `budget` bytes per 20 ms for `ms`.
    Slow {
        /// When.
        at: u64,
        /// For how long.
        ms: u64,
        /// Who.
        proc: usize,
        /// Bytes per read.
        budget: usize,
    },
    /// `proc` dies for good: a member of an `up group` that has a replica, so that
    /// the group must fail over and stay there.
    Loss {
        /// When.
        at: u64,
        /// Who.
        proc: usize,
    },
    /// From `at`, the next session between `a` and `b` is cut `delay_ms` after it
    /// comes up, for 500 ms: a race with the first messages of a session (the
    /// resync requests crossing, a teach-back in flight).
    Flap {
        /// When it is armed.
        at: u64,
        /// One side.
        a: usize,
        /// The other.
        b: usize,
        /// How long after the session comes up.
        delay_ms: u64,
    },
    /// `proc` dials `peer` although a session may be up: a duplicate session,
    /// which replaces the running one on both sides (the newest wins).
    Duplicate {
        /// When.
        at: u64,
        /// Who dials.
        proc: usize,
        /// Whom.
        peer: usize,
    },
}

/// What the world does at an instant to play a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The process dies.
    Kill(usize),
    /// The process dies for good.
    Lose(usize),
    /// It starts again, with its state or not.
    Restart(usize, bool),
    /// Partition (or heal) two processes.
    Partition(usize, usize, Option<Partition>),
    /// Set a link's added delay.
    Delay(usize, usize, u64),
    /// Make a process a slow reader, or a normal one.
    Slow(usize, Option<usize>),
    /// Force a dial.
    Duplicate(usize, usize),
    /// Arm a flap: cut the next session between two processes after a delay.
    Flap(usize, usize, u64),
}

impl Fault {
    /// When it starts.
    pub fn start(&self) -> u64 {
        match *self {
            Fault::Kill { at, .. }
            | Fault::Partition { at, .. }
            | Fault::Delay { at, .. }
            | Fault::Slow { at, .. }
            | Fault::Loss { at, .. }
            | Fault::Flap { at, .. }
            | Fault::Duplicate { at, .. } => at,
        }
    }

    /// When it is over (healed, restarted).
    pub fn end(&self) -> u64 {
        match *self {
            Fault::Kill { at, down_ms, .. } => at + down_ms,
            Fault::Partition { at, ms, .. }
            | Fault::Delay { at, ms, .. }
            | Fault::Slow { at, ms, .. } => at + ms,
            Fault::Duplicate { at, .. } | Fault::Loss { at, .. } => at,
            // Its session may come late; the cut lasts 500 ms after it.
            Fault::Flap { at, delay_ms, .. } => at + delay_ms + FLAP_MS,
        }
    }

    /// Its actions, with their instants.
    pub fn actions(&self) -> Vec<(u64, Action)> {
        match *self {
            Fault::Kill {
                at,
                down_ms,
                proc,
                keep_state,
            } => vec![
                (at, Action::Kill(proc)),
                (at + down_ms, Action::Restart(proc, keep_state)),
            ],
            Fault::Partition { at, ms, a, b, cut } => {
                let p = if cut {
                    Partition::Cut
                } else {
                    Partition::Blackhole
                };
                vec![
                    (at, Action::Partition(a, b, Some(p))),
                    (at + ms, Action::Partition(a, b, None)),
                ]
            }
            Fault::Delay {
                at,
                ms,
                a,
                b,
                extra_ms,
            } => vec![
                (at, Action::Delay(a, b, extra_ms)),
                (at + ms, Action::Delay(a, b, 0)),
            ],
            Fault::Slow {
                at,
                ms,
                proc,
                budget,
            } => vec![
                (at, Action::Slow(proc, Some(budget))),
                (at + ms, Action::Slow(proc, None)),
            ],
            Fault::Duplicate { at, proc, peer } => vec![(at, Action::Duplicate(proc, peer))],
            Fault::Loss { at, proc } => vec![(at, Action::Lose(proc))],
            Fault::Flap { at, a, b, delay_ms } => vec![(at, Action::Flap(a, b, delay_ms))],
        }
    }

    /// Its description with process names.
    pub fn describe<'a>(&'a self, names: &'a [String]) -> Describe<'a> {
        Describe { f: self, names }
    }
}

/// A fault with the processes' names.
#[derive(Debug)]
pub struct Describe<'a> {
    f: &'a Fault,
    names: &'a [String],
}

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: usize| self.names.get(i).map_or("?", String::as_str);
        let t = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        match *self.f {
            Fault::Kill {
                at,
                down_ms,
                proc,
                keep_state,
            } => write!(
                f,
                "at {} kill {} for {down_ms} ms, restart {}",
                t(at),
                n(proc),
                if keep_state {
                    "with its state"
                } else {
                    "empty"
                }
            ),
            Fault::Partition { at, ms, a, b, cut } => write!(
                f,
                "at {} partition {} | {} for {ms} ms ({})",
                t(at),
                n(a),
                n(b),
                if cut { "cut" } else { "blackhole" }
            ),
            Fault::Delay {
                at,
                ms,
                a,
                b,
                extra_ms,
            } => write!(
                f,
                "at {} delay {} - {} by {extra_ms} ms for {ms} ms",
                t(at),
                n(a),
                n(b)
            ),
            Fault::Slow {
                at,
                ms,
                proc,
                budget,
            } => write!(
                f,
                "at {} {} reads {budget} bytes per 20 ms for {ms} ms",
                t(at),
                n(proc)
            ),
            Fault::Loss { at, proc } => write!(f, "at {} {} is lost for good", t(at), n(proc)),
            Fault::Flap { at, a, b, delay_ms } => write!(
                f,
                "from {} the next session {} - {} is cut {delay_ms} ms after it comes up",
                t(at),
                n(a),
                n(b)
            ),
            Fault::Duplicate { at, proc, peer } => write!(
                f,
                "at {} {} opens a duplicate session to {}",
                t(at),
                n(proc),
                n(peer)
            ),
        }
    }
}

/// Draws the faults of a run starting at `start`, over `procs` processes whose
/// peer links are `links`; at most one of `lossable` may be lost for good.
pub fn draw(
    seed: u64,
    start: u64,
    procs: usize,
    links: &[(usize, usize)],
    lossable: &[usize],
) -> Vec<Fault> {
    let mut rng = Rng::new(seed, 1);
    let n = rng.range(1, MAX_FAULTS);
    let mut lost = false;
    let mut faults: Vec<Fault> = (0..n)
        .map(|_| {
            let at = start + rng.range(WINDOW_MS.0, WINDOW_MS.1);
            let link = links[rng.index(links.len())];
            let (a, b) = if rng.chance(1, 2) {
                link
            } else {
                (link.1, link.0)
            };
            match rng.below(14) {
                12 if !lost && !lossable.is_empty() => {
                    lost = true;
                    Fault::Loss {
                        at,
                        proc: lossable[rng.index(lossable.len())],
                    }
                }
                0..=2 => Fault::Kill {
                    at,
                    down_ms: rng.range(300, 10_000),
                    proc: rng.index(procs),
                    keep_state: rng.chance(1, 2),
                },
                13 => Fault::Flap {
                    at,
                    a,
                    b,
                    delay_ms: rng.range(0, 60),
                },
                3..=5 => Fault::Partition {
                    at,
                    ms: rng.range(300, 12_000),
                    a,
                    b,
                    cut: rng.chance(1, 2),
                },
                6..=7 => Fault::Delay {
                    at,
                    ms: rng.range(500, 6_000),
                    a,
                    b,
                    extra_ms: rng.range(20, 600),
                },
                8..=9 => Fault::Slow {
                    at,
                    ms: rng.range(500, 8_000),
                    proc: rng.index(procs),
                    budget: rng.range(16, 512) as usize,
                },
                _ => Fault::Duplicate {
                    at,
                    proc: a,
                    peer: b,
                },
            }
        })
        .collect();
    // A restart is often followed by a flap of one of its first sessions: the
    // races between a new session's first messages and a cut.
    let flaps: Vec<Fault> = faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Kill {
                at, down_ms, proc, ..
            } if rng.chance(1, 3) => {
                let mine: Vec<&(usize, usize)> = links
                    .iter()
                    .filter(|l| l.0 == proc || l.1 == proc)
                    .collect();
                let &(a, b) = *mine.get(rng.index(mine.len()))?;
                Some(Fault::Flap {
                    at: at + down_ms,
                    a,
                    b,
                    delay_ms: rng.range(0, 60),
                })
            }
            _ => None,
        })
        .collect();
    faults.extend(flaps);
    faults.sort_by_key(Fault::start);
    faults
}
