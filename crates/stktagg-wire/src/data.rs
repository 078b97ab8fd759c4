//! Stick-table data types and their values.
//!
//! The numbering is HAProxy's `STKTABLE_DT_*` enumeration: the id of a data type is
//! the bit it occupies in a table definition's bitfield and the order in which its
//! value appears in an update. HAProxy 2.6 knows ids 0 to 24; 25 and 26 arrived in 3.0.

use std::fmt;

/// How a data type's value is stored and carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// A signed 32-bit integer, sign-extended to 64 bits before encoding.
    Sint,
    /// An unsigned 32-bit integer.
    Uint,
    /// An unsigned 64-bit integer.
    Ull,
    /// A frequency counter: three varints (age, current, previous).
    FreqCtr,
    /// A dictionary entry (a server name) carried through a per-session cache.
    Dict,
}

/// How values of one data type from several sources combine into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Saturating sum at the storage width.
    Sum,
    /// Rates evaluated at one instant and summed.
    RateSum,
    /// The maximum (tags).
    Max,
    /// Not summable: the most recently received value wins.
    Latest,
}

macro_rules! data_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $storage:ident, $aggr:ident, $param:ident; )*) => {
        /// A stick-table data type, by its HAProxy id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DataType {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl DataType {
            /// Every data type, in id order.
            pub const ALL: &'static [DataType] = &[$(DataType::$variant,)*];

            /// The data type with this id, if HAProxy defines one.
            pub fn from_id(id: u64) -> Option<DataType> {
                match id {
                    $( $id => Some(DataType::$variant), )*
                    _ => None,
                }
            }

            /// The name HAProxy uses in configurations and in `show table`.
            pub fn name(self) -> &'static str {
                match self { $( DataType::$variant => $name, )* }
            }

            /// How the value is stored and encoded.
            pub fn storage(self) -> Storage {
                match self { $( DataType::$variant => Storage::$storage, )* }
            }

            /// How values from several sources are combined.
            pub fn aggregation(self) -> Aggregation {
                match self { $( DataType::$variant => Aggregation::$aggr, )* }
            }

            /// Which parameters follow this type's id in a table definition.
            pub fn params(self) -> ParamKind {
                match self { $( DataType::$variant => ParamKind::$param, )* }
            }
        }
    };
}

data_types! {
    /// `server_id`: the id of the server the key sticks to.
    ServerId = 0, "server_id", Sint, Latest, None;
    /// `gpt0`: general purpose tag 0.
    Gpt0 = 1, "gpt0", Uint, Max, None;
    /// `gpc0`: general purpose counter 0.
    Gpc0 = 2, "gpc0", Uint, Sum, None;
    /// `gpc0_rate(<period>)`.
    Gpc0Rate = 3, "gpc0_rate", FreqCtr, RateSum, Period;
    /// `conn_cnt`.
    ConnCnt = 4, "conn_cnt", Uint, Sum, None;
    /// `conn_rate(<period>)`.
    ConnRate = 5, "conn_rate", FreqCtr, RateSum, Period;
    /// `conn_cur`: concurrent connections; HAProxy 2.5+ never learns it from a peer.
    ConnCur = 6, "conn_cur", Uint, Sum, None;
    /// `sess_cnt`.
    SessCnt = 7, "sess_cnt", Uint, Sum, None;
    /// `sess_rate(<period>)`.
    SessRate = 8, "sess_rate", FreqCtr, RateSum, Period;
    /// `http_req_cnt`.
    HttpReqCnt = 9, "http_req_cnt", Uint, Sum, None;
    /// `http_req_rate(<period>)`.
    HttpReqRate = 10, "http_req_rate", FreqCtr, RateSum, Period;
    /// `http_err_cnt`.
    HttpErrCnt = 11, "http_err_cnt", Uint, Sum, None;
    /// `http_err_rate(<period>)`.
    HttpErrRate = 12, "http_err_rate", FreqCtr, RateSum, Period;
    /// `bytes_in_cnt` (64-bit).
    BytesInCnt = 13, "bytes_in_cnt", Ull, Sum, None;
    /// `bytes_in_rate(<period>)`.
    BytesInRate = 14, "bytes_in_rate", FreqCtr, RateSum, Period;
    /// `bytes_out_cnt` (64-bit).
    BytesOutCnt = 15, "bytes_out_cnt", Ull, Sum, None;
    /// `bytes_out_rate(<period>)`.
    BytesOutRate = 16, "bytes_out_rate", FreqCtr, RateSum, Period;
    /// `gpc1`: general purpose counter 1.
    Gpc1 = 17, "gpc1", Uint, Sum, None;
    /// `gpc1_rate(<period>)`.
    Gpc1Rate = 18, "gpc1_rate", FreqCtr, RateSum, Period;
    /// `server_key` (alias `server_name`): dictionary-encoded server name.
    ServerKey = 19, "server_key", Dict, Latest, None;
    /// `http_fail_cnt`.
    HttpFailCnt = 20, "http_fail_cnt", Uint, Sum, None;
    /// `http_fail_rate(<period>)`.
    HttpFailRate = 21, "http_fail_rate", FreqCtr, RateSum, Period;
    /// `gpt(<n>)`: an array of tags.
    Gpt = 22, "gpt", Uint, Max, Array;
    /// `gpc(<n>)`: an array of counters.
    Gpc = 23, "gpc", Uint, Sum, Array;
    /// `gpc_rate(<n>,<period>)`: an array of rates.
    GpcRate = 24, "gpc_rate", FreqCtr, RateSum, ArrayPeriod;
    /// `glitch_cnt` (HAProxy 3.0+).
    GlitchCnt = 25, "glitch_cnt", Uint, Sum, None;
    /// `glitch_rate(<period>)` (HAProxy 3.0+).
    GlitchRate = 26, "glitch_rate", FreqCtr, RateSum, Period;
}

/// The parameters a data type carries after its id in a table definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// No parameter.
    None,
    /// A period in milliseconds.
    Period,
    /// An element count.
    Array,
    /// An element count, then a period in milliseconds.
    ArrayPeriod,
}

impl DataType {
    /// The bit this type occupies in a definition's bitfield.
    pub fn bit(self) -> u64 {
        1u64 << (self as u8)
    }

    /// The id of this type.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Whether this is one of the array types (`gpt`, `gpc`, `gpc_rate`).
    pub fn is_array(self) -> bool {
        matches!(self.params(), ParamKind::Array | ParamKind::ArrayPeriod)
    }

    /// Whether HAProxy 2.6 knows this type.
    pub fn in_haproxy_2_6(self) -> bool {
        (self as u8) <= 24
    }

    /// Looks a type up by its configuration name; `server_name` is an alias of
    /// `server_key`, as in HAProxy.
    pub fn from_name(name: &str) -> Option<DataType> {
        if name == "server_name" {
            return Some(DataType::ServerKey);
        }
        DataType::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A frequency counter as carried on the wire.
///
/// `age` is the time in milliseconds since the current period started, measured on
/// the sender's clock, modulo 2^32. The receiver rebuilds the period start from its
/// own clock. Large ages are normal (a counter never touched has its sender's whole
/// uptime as age) and must not be rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FreqCtr {
    /// Milliseconds since the current period started (modular u32).
    pub age: u32,
    /// Events counted in the current period.
    pub curr: u32,
    /// Events counted in the previous period.
    pub prev: u32,
}

/// A dictionary value (`server_key`) after resolution through the session cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DictValue {
    /// No value (`len = 0` on the wire).
    Absent,
    /// A server name.
    Name(bytes::Bytes),
}

/// One decoded value of one data type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A `Storage::Sint` value.
    Sint(i32),
    /// A `Storage::Uint` value.
    Uint(u32),
    /// A `Storage::Ull` value.
    Ull(u64),
    /// A `Storage::FreqCtr` value.
    Freq(FreqCtr),
    /// A `Storage::Dict` value.
    Dict(DictValue),
    /// An array of `Uint` values (`gpt`, `gpc`).
    UintArray(Vec<u32>),
    /// An array of frequency counters (`gpc_rate`).
    FreqArray(Vec<FreqCtr>),
}

/// The parameters of one data type in a table definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataSpec {
    /// The data type.
    pub data_type: DataType,
    /// The period in milliseconds for rate types, else 0.
    pub period_ms: u32,
    /// The element count for array types, else 0.
    pub nbelem: u32,
}

impl DataSpec {
    /// A data type with no parameters.
    pub fn plain(data_type: DataType) -> Self {
        DataSpec {
            data_type,
            period_ms: 0,
            nbelem: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_ordered() {
        for (i, t) in DataType::ALL.iter().enumerate() {
            assert_eq!(t.id() as usize, i);
            assert_eq!(DataType::from_id(i as u64), Some(*t));
            assert_eq!(DataType::from_name(t.name()), Some(*t));
        }
        assert_eq!(DataType::from_id(27), None);
        assert_eq!(
            DataType::from_name("server_name"),
            Some(DataType::ServerKey)
        );
    }
}
