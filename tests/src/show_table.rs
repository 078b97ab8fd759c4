//! Parsers for the runtime API's `show table` answers (HAProxy 2.6 layout).
//!
//! `show table` lists tables, one `# table: <name>, type: <t>, size:<n>, used:<n>`
//! line each. `show table <name>` prints that header, then one line per entry:
//! `<ptr>: key=<key> use=<n> exp=<ms> <field>=<value> ...`. Fields come in data-type
//! id order; rates print as `name(<period>)=<rate>`; arrays expand to `gpc0 gpc1 ...`
//! and `gpc0_rate(P) ...`. String keys escape space, `=` and `\` with a backslash, so
//! tokens are split on unescaped spaces only.

use crate::error::{HarnessError, Result};

/// One table from the `# table:` header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's name as the CLI knows it (`section/table` for peers tables).
    pub name: String,
    /// The key type as printed: `ip`, `ipv6`, `integer`, `string` or `binary`.
    pub key_type: String,
    /// The table's size (maximum entries).
    pub size: u64,
    /// The number of entries in use.
    pub used: u64,
}

/// One `<field>=<value>` of an entry line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name without the period, e.g. `http_req_rate` or `gpc1`.
    pub name: String,
    /// The period in milliseconds for rates, e.g. 10000 in `http_req_rate(10000)`.
    pub period_ms: Option<u32>,
    /// The value as printed (a number, a server name or `-`).
    pub value: String,
}

/// One entry of `show table <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key as printed, with HAProxy's escapes undone (binary keys stay hex).
    pub key: String,
    /// The `use=` reference count.
    pub use_count: i64,
    /// The `exp=` milliseconds left.
    pub exp_ms: i64,
    /// The data fields in the order printed.
    pub fields: Vec<Field>,
}

impl Entry {
    /// The value of the field called `name` (`gpc0`, `http_req_rate`, `gpc1_rate`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(|f| f.value.as_str())
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field called `name` as an integer (signed, so that `server_id=-5` parses).
    pub fn num(&self, name: &str) -> Option<i128> {
        self.get(name).and_then(|v| v.parse().ok())
    }
}

/// The answer to `show table <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDump {
    /// The header.
    pub info: TableInfo,
    /// The entries in the order printed.
    pub entries: Vec<Entry>,
}

impl TableDump {
    /// The entry whose (unescaped) key is `key`. Binary keys compare as hex,
    /// ignoring case.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.key == key || (self.info.key_type == "binary" && e.key.eq_ignore_ascii_case(key))
        })
    }
}

fn parse_err(line: &str, reason: impl Into<String>) -> HarnessError {
    HarnessError::Parse {
        line: line.to_owned(),
        reason: reason.into(),
    }
}

/// Parses one `# table: ...` header line.
pub fn parse_table_header(line: &str) -> Result<TableInfo> {
    let rest = line
        .strip_prefix("# table: ")
        .ok_or_else(|| parse_err(line, "no `# table: ` prefix"))?;
    // The name cannot contain ", " in practice (config identifiers), so the
    // comma-separated layout is unambiguous.
    let mut parts = rest.split(", ");
    let name = parts.next().unwrap_or_default().to_owned();
    let mut key_type = None;
    let mut size = None;
    let mut used = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("type: ") {
            key_type = Some(v.to_owned());
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = p.strip_prefix("used:") {
            used = v.trim().parse().ok();
        }
    }
    match (key_type, size, used) {
        (Some(key_type), Some(size), Some(used)) if !name.is_empty() => Ok(TableInfo {
            name,
            key_type,
            size,
            used,
        }),
        _ => Err(parse_err(line, "missing name, type, size or used")),
    }
}

/// Parses the answer to `show table` (no argument): one `TableInfo` per table.
pub fn parse_table_list(text: &str) -> Result<Vec<TableInfo>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_table_header)
        .collect()
}

/// Splits an entry line on spaces that are not escaped, undoing HAProxy's
/// `dump_text` escapes (`\ `, `\=`, `\\`, `\t`, `\n`, `\r`, `\e`, `\xHH`). Each token
/// is returned with the byte offset of the first unescaped `=`, if any.
fn tokens(line: &str) -> Result<Vec<(String, Option<usize>)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut eq = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if !cur.is_empty() {
                    out.push((std::mem::take(&mut cur), eq.take()));
                }
            }
            '=' if eq.is_none() => {
                eq = Some(cur.len());
                cur.push('=');
            }
            '\\' => match chars.next() {
                Some('t') => cur.push('\t'),
                Some('n') => cur.push('\n'),
                Some('r') => cur.push('\r'),
                Some('e') => cur.push('\u{1b}'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    let b = u8::from_str_radix(&hex, 16)
                        .map_err(|_| parse_err(line, format!("bad escape \\x{hex}")))?;
                    cur.push(char::from(b));
                }
                Some(other) => cur.push(other),
                None => return Err(parse_err(line, "line ends with a backslash")),
            },
            other => cur.push(other),
        }
    }
    if !cur.is_empty() {
        out.push((cur, eq));
    }
    Ok(out)
}

/// Parses one entry line (`0x...: key=... use=... exp=... f=v ...`).
pub fn parse_entry(line: &str) -> Result<Entry> {
    let (_, rest) = line
        .split_once(": ")
        .ok_or_else(|| parse_err(line, "no `<ptr>: ` prefix"))?;
    let toks = tokens(rest)?;
    let mut key = None;
    let mut use_count = None;
    let mut exp_ms = None;
    let mut fields = Vec::new();
    for (tok, eq) in toks {
        let eq = eq.ok_or_else(|| parse_err(line, format!("token `{tok}` has no `=`")))?;
        let (name, value) = (&tok[..eq], &tok[eq + 1..]);
        match name {
            "key" if key.is_none() => key = Some(value.to_owned()),
            "use" => use_count = value.parse().ok(),
            "exp" => exp_ms = value.parse().ok(),
            // 2.7+ prints the shard; it is not a data field.
            "shard" => {}
            _ => {
                let (name, period_ms) = match name.split_once('(') {
                    Some((n, p)) => {
                        let p = p
                            .strip_suffix(')')
                            .and_then(|p| p.parse().ok())
                            .ok_or_else(|| parse_err(line, format!("bad period in `{name}`")))?;
                        (n.to_owned(), Some(p))
                    }
                    None => (name.to_owned(), None),
                };
                fields.push(Field {
                    name,
                    period_ms,
                    value: value.to_owned(),
                });
            }
        }
    }
    match (key, use_count, exp_ms) {
        (Some(key), Some(use_count), Some(exp_ms)) => Ok(Entry {
            key,
            use_count,
            exp_ms,
            fields,
        }),
        _ => Err(parse_err(line, "missing key, use or exp")),
    }
}

/// Parses the answer to `show table <name>`.
pub fn parse_table_dump(text: &str) -> Result<TableDump> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| parse_err(text, "empty answer"))?;
    let info = parse_table_header(header)?;
    let entries = lines.map(parse_entry).collect::<Result<Vec<_>>>()?;
    Ok(TableDump { info, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real 2.6.12 output (peers-protocol.md §10 and a local run).
    const DUMP: &str = "# table: p2/strtab, type: string, size:1024, used:2\n\
0x55c5200eddd0: key=abc use=0 exp=57921 http_err_rate(2000)=8 bytes_in_cnt=5000000000 gpt0=7 gpt1=0 gpc0=3 gpc1=0 gpc2=0 gpc0_rate(5000)=0 gpc1_rate(5000)=0\n\
0x55c5200eddd1: key=a\\ b\\=c\\\\d\\x01 use=1 exp=-3 server_id=-5 server_key=s1\n\n";

    #[test]
    fn parses_entries_fields_and_escapes() {
        let d = parse_table_dump(DUMP).unwrap();
        assert_eq!(d.info.name, "p2/strtab");
        assert_eq!(d.info.key_type, "string");
        assert_eq!((d.info.size, d.info.used), (1024, 2));
        assert_eq!(d.entries.len(), 2);
        let e = d.entry("abc").unwrap();
        assert_eq!((e.use_count, e.exp_ms), (0, 57921));
        assert_eq!(e.num("bytes_in_cnt"), Some(5_000_000_000));
        assert_eq!(e.get("gpt0"), Some("7"));
        assert_eq!(e.num("gpc2"), Some(0));
        let r = e.field("http_err_rate").unwrap();
        assert_eq!((r.period_ms, r.value.as_str()), (Some(2000), "8"));
        assert_eq!(e.field("gpc1_rate").unwrap().period_ms, Some(5000));
        assert_eq!(e.fields.len(), 9);
        let odd = d.entry("a b=c\\d\u{1}").unwrap();
        assert_eq!((odd.use_count, odd.exp_ms), (1, -3));
        assert_eq!(odd.num("server_id"), Some(-5));
        assert_eq!(odd.get("server_key"), Some("s1"));
    }

    #[test]
    fn parses_table_list_and_binary_keys() {
        let l = parse_table_list(
            "# table: b, type: ip, size:1024, used:0\n# table: p/t2, type: binary, size:10, used:1\n\n",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].name, "p/t2");
        assert_eq!(l[1].key_type, "binary");
        let d = parse_table_dump(
            "# table: p/t2, type: binary, size:10, used:1\n0x1: key=4142000000FF use=0 exp=1 gpc0=1\n",
        )
        .unwrap();
        assert!(d.entry("4142000000ff").is_some());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_table_header("Unknown table").is_err());
        assert!(parse_entry("0x1: key=a use=0").is_err());
        assert!(parse_entry("0x1: key=a use=0 exp=1 gpc0").is_err());
        assert!(parse_entry("0x1: key=a use=0 exp=1 r(x)=1").is_err());
    }
}
