//! How one table's values are laid out in memory, and how an input maps onto it.
//!
//! A contribution (one source's latest values for one key) is stored as a *record*:
//! a run of `u32` words with a fixed stride per table, rather than a `Vec<Value>` of
//! enums. All records of a key sit in one `Vec<u32>`, so a key × source contribution
//! costs its stride (16 bytes of header plus the values: 4 bytes per 32-bit counter or
//! tag, 8 per 64-bit counter, 12 per rate) and nothing else.
//!
//! Record words:
//!
//! | words | content |
//! | --- | --- |
//! | 0 | contributor id (an input registration, or the relaying member) |
//! | 1 | resync generation the record was written in |
//! | 2, 3 | absolute expiry in ms on the store's clock, low word first; 0 = never |
//! | 4, 5 | receive sequence number, only in tables with a "latest wins" type |
//! | then | one slot per data type of the table, in definition order |
//!
//! Slots: a 32-bit counter or tag is one word; a 64-bit counter two (low first); a
//! rate three (`tick`, `curr`, `prev`, see [`StoredFreq`]); `server_id` two (present
//! flag, value); `server_key` one (interned name id, 0 = no value); arrays repeat
//! their element.

use crate::error::StoreError;
use crate::rules::{self, StoredFreq, TICK_LOCK_BIT};
use stktagg_wire::{Aggregation, DataSpec, DataType, DictValue, FreqCtr, Storage, Value};

/// The largest array HAProxy declares (`STKTABLE_MAX_DT_ARRAY_SIZE`).
pub const MAX_ARRAY_LEN: u32 = 100;

/// Words of the record header (contributor, generation, expiry).
pub(crate) const HDR: usize = 4;

/// Reused bit 0 of a stored tick (HAProxy's lock bit, always clear at rest): set on a
/// rate whose source period differs from the output's, so that it is kept (for
/// teach-back) but never summed.
pub(crate) const EXCLUDED_BIT: u32 = TICK_LOCK_BIT;

/// How one data type is combined, with its storage shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    Sum32,
    Max32,
    Sum64,
    LatestSint,
    LatestDict,
    Rate { period: u32 },
    SumArray { n: usize },
    MaxArray { n: usize },
    RateArray { n: usize, period: u32 },
}

impl SlotKind {
    fn of(spec: &DataSpec) -> SlotKind {
        let n = spec.nbelem as usize;
        match (spec.data_type.storage(), spec.data_type.aggregation()) {
            (Storage::FreqCtr, _) if spec.data_type.is_array() => SlotKind::RateArray {
                n,
                period: spec.period_ms,
            },
            (Storage::FreqCtr, _) => SlotKind::Rate {
                period: spec.period_ms,
            },
            (Storage::Uint, Aggregation::Max) if spec.data_type.is_array() => {
                SlotKind::MaxArray { n }
            }
            (Storage::Uint, _) if spec.data_type.is_array() => SlotKind::SumArray { n },
            (Storage::Uint, Aggregation::Max) => SlotKind::Max32,
            (Storage::Uint, _) => SlotKind::Sum32,
            (Storage::Ull, _) => SlotKind::Sum64,
            (Storage::Sint, _) => SlotKind::LatestSint,
            (Storage::Dict, _) => SlotKind::LatestDict,
        }
    }

    fn record_words(self) -> usize {
        match self {
            SlotKind::Sum32 | SlotKind::Max32 | SlotKind::LatestDict => 1,
            SlotKind::Sum64 | SlotKind::LatestSint => 2,
            SlotKind::Rate { .. } => 3,
            SlotKind::SumArray { n } | SlotKind::MaxArray { n } => n,
            SlotKind::RateArray { n, .. } => 3 * n,
        }
    }

    fn agg_words(self) -> usize {
        match self {
            SlotKind::Sum32 | SlotKind::Max32 | SlotKind::LatestDict => 1,
            // A rate aggregates to its sum and the part of it in current periods.
            SlotKind::Sum64 | SlotKind::LatestSint | SlotKind::Rate { .. } => 2,
            SlotKind::SumArray { n } | SlotKind::MaxArray { n } => n,
            SlotKind::RateArray { n, .. } => 2 * n,
        }
    }
}

/// One data type's place in a record and in an aggregate.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub spec: DataSpec,
    pub kind: SlotKind,
    /// Word offset in a record.
    pub rec: usize,
    /// Word offset in an aggregate.
    pub agg: usize,
}

/// The layout of one (output or relay) table.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub slots: Vec<Slot>,
    pub has_latest: bool,
    /// Number of rate values in an aggregate (scalar rates plus rate array elements).
    pub rate_values: usize,
    pub stride: usize,
    pub agg_len: usize,
}

impl Layout {
    pub fn new(data: &[DataSpec]) -> Result<Layout, StoreError> {
        let has_latest = data
            .iter()
            .any(|d| d.data_type.aggregation() == Aggregation::Latest);
        let mut rec = HDR + if has_latest { 2 } else { 0 };
        let mut agg = 0;
        let mut rate_values = 0;
        let mut slots = Vec::with_capacity(data.len());
        for spec in data {
            check_array(spec)?;
            let kind = SlotKind::of(spec);
            match kind {
                SlotKind::Rate { .. } => rate_values += 1,
                SlotKind::RateArray { n, .. } => rate_values += n,
                _ => {}
            }
            slots.push(Slot {
                spec: *spec,
                kind,
                rec,
                agg,
            });
            rec += kind.record_words();
            agg += kind.agg_words();
        }
        Ok(Layout {
            slots,
            has_latest,
            rate_values,
            stride: rec,
            agg_len: agg,
        })
    }

    /// Computes the aggregate of `records` at `now` into `out` (cleared first).
    pub fn aggregate(&self, records: &[u32], now: u32, out: &mut Vec<u32>) {
        out.clear();
        out.resize(self.agg_len, 0);
        let recs = || records.chunks_exact(self.stride);
        for slot in &self.slots {
            let (r, a) = (slot.rec, slot.agg);
            match slot.kind {
                SlotKind::Sum32 => out[a] = rules::sum_u32(recs().map(|x| x[r])),
                SlotKind::Max32 => out[a] = rules::max_u32(recs().map(|x| x[r])),
                SlotKind::Sum64 => {
                    let v = rules::sum_u64(recs().map(|x| get_u64(x, r)));
                    put_u64(out, a, v);
                }
                SlotKind::LatestSint => {
                    let v = rules::latest(
                        recs()
                            .filter(|x| x[r] != 0)
                            .map(|x| (get_u64(x, HDR), x[r + 1])),
                    );
                    if let Some(v) = v {
                        out[a] = 1;
                        out[a + 1] = v;
                    }
                }
                SlotKind::LatestDict => {
                    let v = rules::latest(
                        recs()
                            .filter(|x| x[r] != 0)
                            .map(|x| (get_u64(x, HDR), x[r])),
                    );
                    out[a] = v.unwrap_or(0);
                }
                SlotKind::Rate { period } => {
                    let (s, c) =
                        rules::sum_rates_split(recs().filter_map(|x| freq_at(x, r)), period, now);
                    out[a] = s;
                    out[a + 1] = c;
                }
                SlotKind::SumArray { n } => {
                    for i in 0..n {
                        out[a + i] = rules::sum_u32(recs().map(|x| x[r + i]));
                    }
                }
                SlotKind::MaxArray { n } => {
                    for i in 0..n {
                        out[a + i] = rules::max_u32(recs().map(|x| x[r + i]));
                    }
                }
                SlotKind::RateArray { n, period } => {
                    for i in 0..n {
                        let (s, c) = rules::sum_rates_split(
                            recs().filter_map(|x| freq_at(x, r + 3 * i)),
                            period,
                            now,
                        );
                        out[a + 2 * i] = s;
                        out[a + 2 * i + 1] = c;
                    }
                }
            }
        }
    }

    /// The rate values of an aggregate, in slot order (scalars and array elements):
    /// `(sum, current part, period)`.
    pub fn rates_of<'a>(&'a self, agg: &'a [u32]) -> impl Iterator<Item = (u32, u32, u32)> + 'a {
        self.slots.iter().flat_map(move |s| {
            let (n, period) = match s.kind {
                SlotKind::Rate { period } => (1, period),
                SlotKind::RateArray { n, period } => (n, period),
                _ => (0, 0),
            };
            (0..n).map(move |i| (agg[s.agg + 2 * i], agg[s.agg + 2 * i + 1], period))
        })
    }

    /// Turns an aggregate into published values: sums as they are, rates in the
    /// published shape ([`rules::publish_rate`]), into `out` (cleared first).
    pub fn agg_to_values_into(
        &self,
        agg: &[u32],
        dict: &dyn Fn(u32) -> DictValue,
        out: &mut Vec<Value>,
    ) {
        out.clear();
        out.extend(self.slots.iter().map(|slot| {
            let a = slot.agg;
            match slot.kind {
                SlotKind::Sum32 | SlotKind::Max32 => Value::Uint(agg[a]),
                SlotKind::Sum64 => Value::Ull(get_u64(agg, a)),
                SlotKind::LatestSint => Value::Sint(agg[a + 1] as i32),
                SlotKind::LatestDict => Value::Dict(dict(agg[a])),
                SlotKind::Rate { .. } => Value::Freq(rules::publish_rate(agg[a], agg[a + 1])),
                SlotKind::SumArray { n } | SlotKind::MaxArray { n } => {
                    Value::UintArray(agg[a..a + n].to_vec())
                }
                SlotKind::RateArray { n, .. } => Value::FreqArray(
                    agg[a..a + 2 * n]
                        .chunks_exact(2)
                        .map(|sc| rules::publish_rate(sc[0], sc[1]))
                        .collect(),
                ),
            }
        }));
    }

    /// The values of one record in this table's layout, rates re-aged to `now`.
    pub fn record_to_values(
        &self,
        rec: &[u32],
        now: u32,
        dict: &dyn Fn(u32) -> DictValue,
    ) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.slots.len());
        self.record_to_values_into(rec, now, dict, &mut out);
        out
    }

    /// [`Layout::record_to_values`] into a reused buffer (cleared first).
    pub fn record_to_values_into(
        &self,
        rec: &[u32],
        now: u32,
        dict: &dyn Fn(u32) -> DictValue,
        out: &mut Vec<Value>,
    ) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .map(|slot| slot_value(slot, rec, slot.kind_len(), now, dict)),
        );
    }
}

impl Slot {
    /// The element count of an array slot (1 otherwise).
    fn kind_len(&self) -> usize {
        match self.kind {
            SlotKind::SumArray { n } | SlotKind::MaxArray { n } | SlotKind::RateArray { n, .. } => {
                n
            }
            _ => 1,
        }
    }
}

/// One slot of a record as a value with `len` array elements (padded with zeros or
/// truncated), rates re-aged to `now`.
fn slot_value(
    slot: &Slot,
    rec: &[u32],
    len: usize,
    now: u32,
    dict: &dyn Fn(u32) -> DictValue,
) -> Value {
    let r = slot.rec;
    let elems = slot.kind_len();
    match slot.kind {
        SlotKind::Sum32 | SlotKind::Max32 => Value::Uint(rec[r]),
        SlotKind::Sum64 => Value::Ull(get_u64(rec, r)),
        SlotKind::LatestSint => Value::Sint(rec[r + 1] as i32),
        SlotKind::LatestDict => Value::Dict(dict(rec[r])),
        SlotKind::Rate { .. } => Value::Freq(stored_freq(rec, r).to_wire(now)),
        SlotKind::SumArray { .. } | SlotKind::MaxArray { .. } => Value::UintArray(
            (0..len)
                .map(|i| if i < elems { rec[r + i] } else { 0 })
                .collect(),
        ),
        SlotKind::RateArray { .. } => Value::FreqArray(
            (0..len)
                .map(|i| {
                    if i < elems {
                        stored_freq(rec, r + 3 * i).to_wire(now)
                    } else {
                        FreqCtr::default()
                    }
                })
                .collect(),
        ),
    }
}

fn check_array(spec: &DataSpec) -> Result<(), StoreError> {
    if spec.data_type.is_array() && spec.nbelem > MAX_ARRAY_LEN {
        return Err(StoreError::ArrayTooLong {
            data_type: spec.data_type,
            nbelem: spec.nbelem,
        });
    }
    Ok(())
}

/// The stored counter at word `r`, with the exclusion flag cleared.
fn stored_freq(rec: &[u32], r: usize) -> StoredFreq {
    StoredFreq {
        tick: rec[r] & !EXCLUDED_BIT,
        curr: rec[r + 1],
        prev: rec[r + 2],
    }
}

/// The stored counter at word `r` if it takes part in sums.
fn freq_at(rec: &[u32], r: usize) -> Option<StoredFreq> {
    if rec[r] & EXCLUDED_BIT != 0 {
        None
    } else {
        Some(stored_freq(rec, r))
    }
}

pub(crate) fn get_u64(words: &[u32], at: usize) -> u64 {
    u64::from(words[at]) | (u64::from(words[at + 1]) << 32)
}

pub(crate) fn put_u64(words: &mut [u32], at: usize, v: u64) {
    words[at] = v as u32;
    words[at + 1] = (v >> 32) as u32;
}

/// A difference between an input definition and the table it feeds, found when the
/// input is registered. None of these is an error: the input is still used, as
/// described per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mismatch {
    /// The input stores a rate with another period than the output: its values are
    /// kept (for teach-back) but never summed into the output.
    Period {
        /// The rate type.
        data_type: DataType,
        /// The input's period in ms.
        input_ms: u32,
        /// The output's period in ms.
        output_ms: u32,
    },
    /// The input's array has another element count: extra elements are ignored,
    /// missing ones count as 0.
    ArrayLength {
        /// The array type.
        data_type: DataType,
        /// The input's element count.
        input: u32,
        /// The output's element count.
        output: u32,
    },
    /// The output stores a type the input lacks: the input contributes nothing to it.
    Missing(DataType),
    /// The input stores a type the output lacks: ignored.
    Extra(DataType),
}

/// Where one output slot's value comes from in an input's values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotSource {
    pub index: usize,
    pub excluded: bool,
}

/// How an input definition maps onto a table layout (by data type).
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    /// Per output slot, where its value comes from.
    pub per_slot: Vec<Option<SlotSource>>,
    /// The input definition's data types, in its order.
    pub input: Vec<DataSpec>,
    pub mismatches: Vec<Mismatch>,
}

impl Mapping {
    pub fn new(layout: &Layout, input: &[DataSpec]) -> Result<Mapping, StoreError> {
        let mut mismatches = Vec::new();
        let mut per_slot = Vec::with_capacity(layout.slots.len());
        for slot in &layout.slots {
            let found = input
                .iter()
                .position(|d| d.data_type == slot.spec.data_type);
            let Some(index) = found else {
                mismatches.push(Mismatch::Missing(slot.spec.data_type));
                per_slot.push(None);
                continue;
            };
            let spec = &input[index];
            check_array(spec)?;
            let mut excluded = false;
            if spec.data_type.storage() == Storage::FreqCtr && spec.period_ms != slot.spec.period_ms
            {
                excluded = true;
                mismatches.push(Mismatch::Period {
                    data_type: spec.data_type,
                    input_ms: spec.period_ms,
                    output_ms: slot.spec.period_ms,
                });
            }
            if spec.data_type.is_array() && spec.nbelem != slot.spec.nbelem {
                mismatches.push(Mismatch::ArrayLength {
                    data_type: spec.data_type,
                    input: spec.nbelem,
                    output: slot.spec.nbelem,
                });
            }
            per_slot.push(Some(SlotSource { index, excluded }));
        }
        for d in input {
            if !layout.slots.iter().any(|s| s.spec.data_type == d.data_type) {
                mismatches.push(Mismatch::Extra(d.data_type));
            }
        }
        Ok(Mapping {
            per_slot,
            input: input.to_vec(),
            mismatches,
        })
    }

    /// Writes the values of one update (in the input's order) into `rec`'s slots.
    /// `rec` must be a zeroed record (header excepted). `intern` turns a server name
    /// into its id.
    pub fn write(
        &self,
        layout: &Layout,
        values: &[Value],
        rx_now: u32,
        rec: &mut [u32],
        intern: &mut dyn FnMut(&DictValue) -> Result<u32, StoreError>,
    ) -> Result<(), StoreError> {
        if values.len() != self.input.len() {
            return Err(StoreError::ValueCount {
                expected: self.input.len(),
                got: values.len(),
            });
        }
        for (slot, src) in layout.slots.iter().zip(&self.per_slot) {
            let Some(src) = src else { continue };
            let value = &values[src.index];
            let r = slot.rec;
            let excl = if src.excluded { EXCLUDED_BIT } else { 0 };
            let bad = || StoreError::ValueKind {
                data_type: slot.spec.data_type,
            };
            match (slot.kind, value) {
                (SlotKind::Sum32 | SlotKind::Max32, Value::Uint(v)) => rec[r] = *v,
                (SlotKind::Sum64, Value::Ull(v)) => put_u64(rec, r, *v),
                (SlotKind::LatestSint, Value::Sint(v)) => {
                    rec[r] = 1;
                    rec[r + 1] = *v as u32;
                }
                (SlotKind::LatestDict, Value::Dict(d)) => rec[r] = intern(d)?,
                (SlotKind::Rate { .. }, Value::Freq(f)) => {
                    write_freq(rec, r, *f, rx_now, excl);
                }
                (SlotKind::SumArray { n } | SlotKind::MaxArray { n }, Value::UintArray(a)) => {
                    for (i, v) in a.iter().take(n).enumerate() {
                        rec[r + i] = *v;
                    }
                }
                (SlotKind::RateArray { n, .. }, Value::FreqArray(a)) => {
                    for i in 0..n {
                        // Missing elements are idle counters; they still carry the
                        // exclusion flag so that teach-back stays consistent.
                        let f = a.get(i).copied().unwrap_or_default();
                        write_freq(rec, r + 3 * i, f, rx_now, excl);
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(())
    }

    /// Rebuilds the values of `rec` in the input's order, as the source sent them,
    /// rates re-aged to `now`. Types the table does not store read as zero values.
    pub fn read_back(
        &self,
        layout: &Layout,
        rec: &[u32],
        now: u32,
        dict: &dyn Fn(u32) -> DictValue,
    ) -> Vec<Value> {
        self.input
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let slot = layout
                    .slots
                    .iter()
                    .zip(&self.per_slot)
                    .find(|(_, src)| src.is_some_and(|s| s.index == i))
                    .map(|(slot, _)| slot);
                match slot {
                    Some(slot) => slot_value(slot, rec, spec.nbelem as usize, now, dict),
                    None => zero_value(spec),
                }
            })
            .collect()
    }
}

fn write_freq(rec: &mut [u32], r: usize, f: FreqCtr, rx_now: u32, excl: u32) {
    let s = StoredFreq::on_receipt(f, rx_now);
    rec[r] = s.tick | excl;
    rec[r + 1] = s.curr;
    rec[r + 2] = s.prev;
}

/// The zero value of a data type (what an idle entry holds).
pub(crate) fn zero_value(spec: &DataSpec) -> Value {
    let n = spec.nbelem as usize;
    match spec.data_type.storage() {
        Storage::Sint => Value::Sint(0),
        Storage::Uint if spec.data_type.is_array() => Value::UintArray(vec![0; n]),
        Storage::Uint => Value::Uint(0),
        Storage::Ull => Value::Ull(0),
        Storage::FreqCtr if spec.data_type.is_array() => {
            Value::FreqArray(vec![FreqCtr::default(); n])
        }
        Storage::FreqCtr => Value::Freq(FreqCtr::default()),
        Storage::Dict => Value::Dict(DictValue::Absent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data_type: DataType, period_ms: u32, nbelem: u32) -> DataSpec {
        DataSpec {
            data_type,
            period_ms,
            nbelem,
        }
    }

    #[test]
    fn a_typical_contribution_fits_in_48_bytes() {
        // The fact sheet's table: gpc0, conn_cur, http_req_cnt, http_req_rate(10s).
        let l = Layout::new(&[
            spec(DataType::Gpc0, 0, 0),
            spec(DataType::ConnCur, 0, 0),
            spec(DataType::HttpReqCnt, 0, 0),
            spec(DataType::HttpReqRate, 10_000, 0),
        ])
        .unwrap();
        assert_eq!(l.stride * 4, 40);
        // A rate aggregates to two words: the sum and its current part.
        assert_eq!(l.agg_len, 5);
        assert_eq!(l.rate_values, 1);
        assert!(!l.has_latest);
        // "Latest" types add a sequence number.
        let l = Layout::new(&[
            spec(DataType::ServerId, 0, 0),
            spec(DataType::BytesInCnt, 0, 0),
        ])
        .unwrap();
        assert_eq!(l.stride, HDR + 2 + 2 + 2);
        assert_eq!((l.slots[0].rec, l.slots[1].rec), (HDR + 2, HDR + 4));
    }

    #[test]
    fn arrays_are_bounded() {
        let err = Layout::new(&[spec(DataType::Gpc, 0, 101)]).unwrap_err();
        assert_eq!(
            err,
            StoreError::ArrayTooLong {
                data_type: DataType::Gpc,
                nbelem: 101
            }
        );
        let l = Layout::new(&[spec(DataType::GpcRate, 1000, 100)]).unwrap();
        assert_eq!(l.stride, HDR + 300);
        assert_eq!(l.rate_values, 100);
    }
}
