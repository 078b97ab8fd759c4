//! Golden capture files: raw HAProxy messages for `crates/stktagg-wire/tests/golden.rs`.
//!
//! With `STKTAGG_RECORD=1` a test writes the frames it was sent to
//! `crates/stktagg-wire/tests/captures/<name>.hex`: `#` comment lines describing the
//! configuration and the expected values, then one message per line as hex. Without
//! it, the live frames are compared with the file by structure only: the same
//! sequence of (class, type), and the same bytes for table definitions. Update
//! bodies hold ages, expiries and ids that change from run to run.

use std::path::PathBuf;
use stktagg_tests::frame::{RawFrame, from_hex};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/stktagg-wire/tests/captures")
        .join(format!("{name}.hex"))
}

/// Whether captures are being recorded in this run.
pub fn recording() -> bool {
    std::env::var("STKTAGG_RECORD").is_ok_and(|v| v == "1")
}

/// Records `frames` under `name` (when recording) or checks them against the file.
pub fn record_or_compare(name: &str, comment: &str, frames: &[&RawFrame]) {
    let p = path(name);
    if recording() {
        let mut text = String::new();
        for l in comment.trim().lines() {
            text.push_str(
                &format!("# {}\n", l.trim_end())
                    .replace("#  \n", "#\n")
                    .replace("# \n", "#\n"),
            );
        }
        for f in frames {
            text.push_str(&f.hex());
            text.push('\n');
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; record it with STKTAGG_RECORD=1", p.display()));
    let golden: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| from_hex(l).unwrap_or_else(|| panic!("bad hex line in {}: {l}", p.display())))
        .collect();
    let shape = |b: &[u8]| (b[0], b[1]);
    let live: Vec<_> = frames.iter().map(|f| shape(&f.raw)).collect();
    let want: Vec<_> = golden.iter().map(|g| shape(g)).collect();
    assert_eq!(live, want, "message sequence differs from {}", p.display());
    for (f, g) in frames.iter().zip(&golden) {
        if f.msg_type() == 0x82 {
            assert_eq!(
                f.raw[..],
                g[..],
                "table definition differs from {}",
                p.display()
            );
        }
    }
}
