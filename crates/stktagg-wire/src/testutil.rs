//! Helpers shared by the unit tests: hex in and out, so that tests read like captures.

/// Lowercase hex, bytes separated by one space (`"0a 84 05"`).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses hex with optional whitespace; `"quoted"` runs are taken as ASCII bytes, so
/// captures can be written as `0f "/local_counters" 04`.
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("closing quote");
            out.extend_from_slice(&r.as_bytes()[..end]);
            rest = &r[end + 1..];
        } else if rest.starts_with(char::is_whitespace) {
            rest = &rest[1..];
        } else {
            out.push(u8::from_str_radix(&rest[..2], 16).expect("hex byte"));
            rest = &rest[2..];
        }
    }
    out
}
