//! The aggregation rules, as pure functions.
//!
//! Everything here takes values and returns values: no clock, no locks. The store
//! calls these functions; the tests check them against the worked examples of the
//! peers protocol fact sheet (`docs/peers-protocol.md` §9) and against properties
//! (order independence, saturation).
//!
//! # Frequency counters
//!
//! HAProxy keeps a rate as `{curr_tick, curr_ctr, prev_ctr}` and puts
//! `{age, curr, prev}` on the wire, where `age = now − curr_tick` on the sender's
//! clock. Every clock value here is a 32-bit millisecond tick that wraps, exactly as
//! HAProxy's `now_ms`: callers truncate their monotonic 64-bit clock with `as u32`.
//!
//! # The published shape of a summed rate
//!
//! A sum `S` of rates evaluated at `now` is published as a counter whose period
//! starts at the instant it is sent (`age = 0`), whose current count `C` is the sum of
//! the sources' current-period counts at `now`, and whose previous count is the rest,
//! `S − C` ([`publish_rate`]). By the read rule a receiver reads it as exactly `S` at
//! `t = 0`, then as `C + ⌊(S − C)·(P − t)/P⌋`: the part of the sum that comes from the
//! sources' previous periods fades out over one period, and the part counted in
//! their current periods stays, then fades over the next period: the way the sum of
//! the sources' own counters decays when traffic stops, up to each source's phase
//! within its period. A multi-level tree therefore does not lose accuracy level after
//! level: each level reads what the one below published as the same sum.
//!
//! Two simpler shapes were rejected. `curr = 0, prev = S` reads `S − 1` one
//! millisecond after it is sent (the floor) and fades the whole sum over one period
//! even while the sources' counts are current, so it understates every rate until the
//! next publication, and the error compounds at every level of a tree.
//! `curr = S, prev = 0` reads a flat `S` for a whole period and then fades over a
//! second one, overstating a falling rate for up to 2·P. The published counter is
//! re-published whenever what receivers read drifts from the true sum (see
//! `Store::refresh_rates`), which bounds the error of any shape to one refresh.

use stktagg_wire::FreqCtr;

/// Bit 0 of a stored tick is HAProxy's lock bit: it is always clear in a counter at
/// rest (HAProxy clears it when it rebuilds a tick from a received age).
pub const TICK_LOCK_BIT: u32 = 1;

/// A frequency counter as the receiver stores it: the start of the current period on
/// the receiver's clock, and the two counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StoredFreq {
    /// Start of the current period (receiver's 32-bit ms clock, lock bit clear).
    pub tick: u32,
    /// Events in the current period.
    pub curr: u32,
    /// Events in the previous period.
    pub prev: u32,
}

impl StoredFreq {
    /// Rebuilds a received counter the way HAProxy does on receipt:
    /// `curr_tick = (rx_now − age) mod 2^32`, where a result of 0 becomes 1 (HAProxy's
    /// `tick_add()` never returns the "eternity" tick 0), then the lock bit is cleared.
    pub fn on_receipt(wire: FreqCtr, rx_now: u32) -> StoredFreq {
        let mut tick = rx_now.wrapping_sub(wire.age);
        if tick == 0 {
            tick = 1;
        }
        StoredFreq {
            tick: tick & !TICK_LOCK_BIT,
            curr: wire.curr,
            prev: wire.prev,
        }
    }

    /// The counter as it would be put on the wire at `now`: the age is re-computed
    /// from the stored tick (modular), the counts are unchanged.
    pub fn to_wire(self, now: u32) -> FreqCtr {
        FreqCtr {
            age: now.wrapping_sub(self.tick),
            curr: self.curr,
            prev: self.prev,
        }
    }

    /// The rate this counter shows at `now` for a period of `period_ms` ms.
    pub fn rate_at(self, period_ms: u32, now: u32) -> u32 {
        read_rate(self, period_ms, now)
    }
}

/// HAProxy's read rule for a frequency counter (`read_freq_ctr_period()`), evaluated
/// at `now` with period `period_ms`:
///
/// 1. `remain = tick + P − now` as a signed 32-bit difference;
/// 2. if `remain < 0`: `remain += P`; the previous count is the current one if
///    `remain ≥ 0`, else 0; the current count becomes 0;
/// 3. if the current count is 0 and the previous is at most 1, the rate is the
///    previous count (flapping correction at very low rates);
/// 4. otherwise `⌊(prev·remain + curr·P) / P⌋`.
///
/// The product is computed exactly (128-bit) and the result saturates at `u32::MAX`
/// where HAProxy's 64-bit arithmetic would wrap, which only absurd inputs reach. A
/// period of 0 (never configured by HAProxy) reads as the current count, instead of
/// dividing by zero.
pub fn read_rate(ctr: StoredFreq, period_ms: u32, now: u32) -> u32 {
    if period_ms == 0 {
        return ctr.curr;
    }
    let period = i64::from(period_ms);
    let mut curr = u128::from(ctr.curr);
    let mut past = u128::from(ctr.prev);
    // The signed 32-bit difference makes a wrapped clock behave like HAProxy's.
    let mut remain = i64::from(ctr.tick.wrapping_add(period_ms).wrapping_sub(now) as i32);
    if remain < 0 {
        remain += period;
        past = if remain >= 0 { curr } else { 0 };
        curr = 0;
    }
    if curr == 0 && past <= 1 {
        return past as u32;
    }
    // Here `remain` is not negative whenever `past` is non-zero: the only way to keep
    // a negative remain is the branch above, which zeroes `past`.
    let remain = u128::try_from(remain.max(0)).unwrap_or(0);
    let period = period_ms as u128;
    let total = past * remain + curr * period;
    u32::try_from(total / period).unwrap_or(u32::MAX)
}

/// The counter that publishes a rate sum `sum` at the instant it is sent, where
/// `curr` of it was counted in the sources' current periods: `age = 0`,
/// `curr = min(curr, sum)`, `prev = sum − curr` (see the module documentation).
pub fn publish_rate(sum: u32, curr: u32) -> FreqCtr {
    let curr = curr.min(sum);
    FreqCtr {
        age: 0,
        curr,
        prev: sum - curr,
    }
}

/// What a receiver that got [`publish_rate`]`(sum, curr)` at `published_at` reads at
/// `now`.
pub fn published_rate_at(sum: u32, curr: u32, published_at: u32, period_ms: u32, now: u32) -> u32 {
    let stored = StoredFreq::on_receipt(publish_rate(sum, curr), published_at);
    read_rate(stored, period_ms, now)
}

/// Whether a published rate that receivers now read as `seen` has drifted far
/// enough from the true sum `truth` to be published again: any difference below 64
/// (so small rates, the ones closest to a limit of a few requests, stay exact), and
/// more than 1/64 (about 1.6 %) of the sum above. Without this bound every busy key
/// of a large table would be re-sent at every refresh, ahead of fresh changes.
pub fn drifted(seen: u32, truth: u32) -> bool {
    seen.abs_diff(truth) > truth.max(seen) / 64
}

/// The part of a counter's reading at `now` that was counted in its current period:
/// its current count while that period lasts, 0 once the period is over.
pub fn current_part(ctr: StoredFreq, period_ms: u32, now: u32) -> u32 {
    if period_ms == 0 {
        return ctr.curr;
    }
    let remain = ctr.tick.wrapping_add(period_ms).wrapping_sub(now) as i32;
    if remain < 0 { 0 } else { ctr.curr }
}

/// The sum of rates at `now` (as [`sum_rates`]) and the part of it counted in the
/// sources' current periods, both saturating.
pub fn sum_rates_split(
    ctrs: impl IntoIterator<Item = StoredFreq>,
    period_ms: u32,
    now: u32,
) -> (u32, u32) {
    ctrs.into_iter().fold((0u32, 0u32), |(s, c), x| {
        (
            s.saturating_add(read_rate(x, period_ms, now)),
            c.saturating_add(current_part(x, period_ms, now)),
        )
    })
}

/// The sum of rates of several sources, each evaluated at the same instant `now`
/// with the output's period, saturating at `u32::MAX`.
pub fn sum_rates(ctrs: impl IntoIterator<Item = StoredFreq>, period_ms: u32, now: u32) -> u32 {
    ctrs.into_iter().fold(0u32, |acc, c| {
        acc.saturating_add(read_rate(c, period_ms, now))
    })
}

/// Saturating sum of 32-bit counters (`Uint` storage), never wrapping.
pub fn sum_u32(values: impl IntoIterator<Item = u32>) -> u32 {
    values.into_iter().fold(0u32, u32::saturating_add)
}

/// Saturating sum of 64-bit counters (`Ull` storage), never wrapping.
pub fn sum_u64(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0u64, u64::saturating_add)
}

/// The maximum of tags (`gpt0`, `gpt`), 0 when there is none.
pub fn max_u32(values: impl IntoIterator<Item = u32>) -> u32 {
    values.into_iter().max().unwrap_or(0)
}

/// Element-wise combination of arrays of length `n` with `f` (sum or max); missing
/// elements of shorter arrays count as 0.
pub fn combine_arrays<'a>(
    arrays: impl IntoIterator<Item = &'a [u32]>,
    n: usize,
    f: fn(u32, u32) -> u32,
) -> Vec<u32> {
    let mut out = vec![0u32; n];
    for a in arrays {
        for (o, v) in out.iter_mut().zip(a.iter()) {
            *o = f(*o, *v);
        }
    }
    out
}

/// The most recently received value: among `(sequence, value)` pairs, the value with
/// the highest sequence number.
pub fn latest<T>(values: impl IntoIterator<Item = (u64, T)>) -> Option<T> {
    values
        .into_iter()
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u32 = 10_000;

    fn st(tick: u32, curr: u32, prev: u32) -> StoredFreq {
        StoredFreq { tick, curr, prev }
    }

    #[test]
    fn worked_example_of_the_fact_sheet() {
        let c = st(995_000, 30, 100);
        assert_eq!(read_rate(c, P, 1_000_000), 80);
        assert_eq!(read_rate(c, P, 1_007_000), 24);
        assert_eq!(read_rate(c, P, 1_016_000), 0);
        // The sender encodes age 5000 at 1 000 000; a receiver at 77 777 000 rebuilds
        // tick 77 772 000 and reads 80 too.
        let wire = c.to_wire(1_000_000);
        assert_eq!(
            wire,
            FreqCtr {
                age: 5000,
                curr: 30,
                prev: 100
            }
        );
        let rx = StoredFreq::on_receipt(wire, 77_777_000);
        assert_eq!(rx.tick, 77_772_000);
        assert_eq!(read_rate(rx, P, 77_777_000), 80);
    }

    #[test]
    fn receipt_clears_the_lock_bit_and_avoids_tick_zero() {
        let odd = StoredFreq::on_receipt(
            FreqCtr {
                age: 2,
                curr: 1,
                prev: 0,
            },
            1001,
        );
        assert_eq!(odd.tick, 998);
        // rx_now − age = 0 becomes 1, then the lock bit is cleared: 0 again, as HAProxy.
        let zero = StoredFreq::on_receipt(
            FreqCtr {
                age: 500,
                curr: 0,
                prev: 0,
            },
            500,
        );
        assert_eq!(zero.tick, 0);
        // Huge ages (a never-touched counter carries the sender's uptime) wrap.
        let huge = StoredFreq::on_receipt(
            FreqCtr {
                age: 322_314_783,
                curr: 0,
                prev: 0,
            },
            1000,
        );
        assert_eq!(huge.tick, 1000u32.wrapping_sub(322_314_783) & !1);
        assert_eq!(read_rate(huge, P, 1000), 0);
    }

    #[test]
    fn read_rule_across_clock_wrap() {
        // Period started 2 s before the 32-bit clock wrapped; read 3 s after the wrap.
        let c = st(u32::MAX - 1999, 40, 100);
        let now = 3000u32;
        // remain = 10 000 − 5000 = 5000: (100·5000 + 40·10 000)/10 000 = 90.
        assert_eq!(read_rate(c, P, now), 90);
    }

    #[test]
    fn flapping_correction_at_low_rates() {
        // Current period empty, one event in the previous one: reads 1, not 0.
        assert_eq!(read_rate(st(1000, 0, 1), P, 10_999), 1);
        // Two events: proportional, 2·1/10 000 rounds down to 0 near the end.
        assert_eq!(read_rate(st(1000, 0, 2), P, 10_999), 0);
        // Zero period does not divide by zero.
        assert_eq!(read_rate(st(1000, 7, 3), 0, 5000), 7);
    }

    #[test]
    fn published_sum_reads_back_and_decays_within_one_period() {
        let s = 1000;
        let t0 = 50_000u32;
        let at = |t: u32| published_rate_at(s, 0, t0, P, t0 + t);
        assert_eq!(at(0), 1000);
        assert_eq!(at(1), 999);
        assert_eq!(at(2500), 750);
        assert_eq!(at(5000), 500);
        assert_eq!(at(9999), 0);
        assert_eq!(at(10_000), 0);
        assert_eq!(at(15_000), 0);
        assert_eq!(at(25_000), 0);
        // A receiver whose clock is odd loses one millisecond to the lock bit, as
        // with HAProxy's own counters: the sum reads 1 ms into its decay.
        assert_eq!(published_rate_at(s, 0, t0 + 1, P, t0 + 1), 999);
        assert_eq!(published_rate_at(s, 0, t0 + 1, P, t0 + 1 + 5000), 499);
        // At S ≤ 1 the flapping correction holds the value for the whole period.
        assert_eq!(published_rate_at(1, 0, t0, P, t0 + 9999), 1);
        assert_eq!(published_rate_at(1, 0, t0, P, t0 + 10_000), 1);
        assert_eq!(published_rate_at(1, 0, t0, P, t0 + 10_001), 0);
        assert_eq!(published_rate_at(0, 0, t0, P, t0), 0);
    }

    #[test]
    fn drift_is_exact_below_64_and_relative_above() {
        assert!(!drifted(10, 10));
        assert!(drifted(9, 10));
        assert!(drifted(62, 63));
        assert!(!drifted(64, 63));
        assert!(!drifted(1000, 1015));
        assert!(drifted(1000, 1016));
        assert!(drifted(0, 1));
        assert!(!drifted(u32::MAX, u32::MAX - 1));
    }

    #[test]
    fn published_sum_keeps_its_current_part_for_a_period() {
        let t0 = 50_000u32;
        // 1000 in all, 600 of it counted in the sources' current periods.
        let at = |t: u32| published_rate_at(1000, 600, t0, P, t0 + t);
        assert_eq!(at(0), 1000);
        assert_eq!(at(1), 999);
        assert_eq!(at(5000), 800);
        assert_eq!(at(9999), 600);
        // Next period: the current part has become the previous one and fades.
        assert_eq!(at(10_000), 600);
        assert_eq!(at(15_000), 300);
        assert_eq!(at(20_000), 0);
        // A current part larger than the sum (cannot happen) is clamped.
        assert_eq!(
            publish_rate(5, 9),
            FreqCtr {
                age: 0,
                curr: 5,
                prev: 0
            }
        );
    }

    #[test]
    fn split_sum_matches_the_sources_at_the_instant() {
        // Source a: mid-period, curr 30, prev 100 (reads 80). Source b: its period
        // ended 2 s ago, curr 10 becomes past (reads 8) and counts nothing current.
        let a = StoredFreq {
            tick: 995_000,
            curr: 30,
            prev: 100,
        };
        let b = StoredFreq {
            tick: 988_000,
            curr: 10,
            prev: 50,
        };
        assert_eq!(sum_rates_split([a, b], P, 1_000_000), (88, 30));
    }

    #[test]
    fn combining() {
        assert_eq!(sum_u32([1, 2, 3]), 6);
        assert_eq!(sum_u32([u32::MAX, 1]), u32::MAX);
        assert_eq!(sum_u64([u64::MAX - 1, 5]), u64::MAX);
        assert_eq!(sum_u64([5_000_000_000, 5_000_000_000]), 10_000_000_000);
        assert_eq!(max_u32([3, 9, 1]), 9);
        assert_eq!(max_u32([]), 0);
        let a: &[u32] = &[1, 5, 7];
        let b: &[u32] = &[2, 1];
        assert_eq!(
            combine_arrays([a, b], 3, u32::saturating_add),
            vec![3, 6, 7]
        );
        assert_eq!(combine_arrays([a, b], 3, u32::max), vec![2, 5, 7]);
        assert_eq!(latest([(3, "b"), (7, "c"), (1, "a")]), Some("c"));
        let two = [st(995_000, 30, 100), st(999_000, 5, 0)];
        assert_eq!(sum_rates(two, P, 1_000_000), 85);
    }

    proptest! {
        #[test]
        fn sums_saturate_and_never_wrap(v in prop::collection::vec(any::<u32>(), 0..20)) {
            let exact: u128 = v.iter().map(|&x| u128::from(x)).sum();
            prop_assert_eq!(u128::from(sum_u32(v.iter().copied())), exact.min(u128::from(u32::MAX)));
            let w: Vec<u64> = v.iter().map(|&x| u64::from(x) << 32).collect();
            let exact64: u128 = w.iter().map(|&x| u128::from(x)).sum();
            prop_assert_eq!(u128::from(sum_u64(w.iter().copied())), exact64.min(u128::from(u64::MAX)));
        }

        #[test]
        fn combination_is_order_independent(
            mut v in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), 0u32..40_000), 1..8),
            now in any::<u32>(),
            rot in 0usize..8,
        ) {
            let ctrs: Vec<StoredFreq> = v.iter().map(|&(c, p, _, age)| StoredFreq::on_receipt(
                FreqCtr { age, curr: c % 100_000, prev: p % 100_000 }, now)).collect();
            let counters: Vec<u32> = v.iter().map(|x| x.2).collect();
            let r1 = sum_rates(ctrs.iter().copied(), P, now);
            let s1 = sum_u32(counters.iter().copied());
            let m1 = max_u32(counters.iter().copied());
            let k = rot % v.len();
            v.rotate_left(k);
            v.reverse();
            let ctrs2: Vec<StoredFreq> = v.iter().map(|&(c, p, _, age)| StoredFreq::on_receipt(
                FreqCtr { age, curr: c % 100_000, prev: p % 100_000 }, now)).collect();
            let counters2: Vec<u32> = v.iter().map(|x| x.2).collect();
            prop_assert_eq!(r1, sum_rates(ctrs2, P, now));
            prop_assert_eq!(s1, sum_u32(counters2.iter().copied()));
            prop_assert_eq!(m1, max_u32(counters2.iter().copied()));
        }

        #[test]
        fn receipt_then_wire_round_trips_the_age(age in any::<u32>(), curr in any::<u32>(), prev in any::<u32>(), rx in any::<u32>(), later in 0u32..1_000_000) {
            let s = StoredFreq::on_receipt(FreqCtr { age, curr, prev }, rx);
            let w = s.to_wire(rx.wrapping_add(later));
            // The lock bit can cost one millisecond, never more.
            let expect = age.wrapping_add(later);
            prop_assert!(w.age == expect || w.age == expect.wrapping_add(1));
            prop_assert_eq!((w.curr, w.prev), (curr, prev));
        }

        #[test]
        fn published_rate_is_exact_then_falls_to_zero(s in 2u32..10_000_000, t0 in any::<u32>(), p in 1u32..100_000, t in 0u32..200_000) {
            let t0 = t0 & !1;
            prop_assert_eq!(published_rate_at(s, 0, t0, p, t0), s);
            let v = published_rate_at(s, 0, t0, p, t0.wrapping_add(t));
            if t >= p {
                prop_assert_eq!(v, 0);
            } else {
                let expect = (u64::from(s) * u64::from(p - t)) / u64::from(p);
                prop_assert_eq!(u64::from(v), expect);
            }
            // Never increases over time.
            let later = published_rate_at(s, 0, t0, p, t0.wrapping_add(t + 1));
            prop_assert!(later <= v);
        }
    }
}
