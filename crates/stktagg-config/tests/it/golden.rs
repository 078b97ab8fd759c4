//! Golden files: `tests/data/ok/*.cfg` must parse (their warnings, if any, are in a
//! sibling `.warn` file), and `tests/data/err/*.cfg` must fail with exactly the
//! diagnostics in the sibling `.err` file.
//!
//! Set `STKTAGG_BLESS=1` to rewrite the expectation files from the current output
//! (then review the diff).

use std::fs;
use std::path::{Path, PathBuf};

fn data_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(kind)
}

fn configs(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(data_dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    files.sort();
    files
}

fn bless() -> bool {
    std::env::var_os("STKTAGG_BLESS").is_some_and(|v| v != "0")
}

/// Compares `actual` with the file at `expect_path` (absent means empty), or
/// rewrites the file when blessing. Returns a failure description.
fn check(expect_path: &Path, actual: &str) -> Option<String> {
    if bless() {
        if actual.is_empty() {
            let _ = fs::remove_file(expect_path);
        } else {
            fs::write(expect_path, actual).unwrap();
        }
        return None;
    }
    let expected = fs::read_to_string(expect_path).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}\n",
            expect_path.display()
        )
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn ok_configs_parse() {
    let files = configs("ok");
    assert!(files.len() >= 10, "expected at least 10 ok configs");
    let mut failures = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        match stktagg_config::parse_str(&text, &file_name(&path)) {
            Ok(cfg) => {
                let warnings: String = cfg.warnings.iter().map(|w| format!("{w}\n")).collect();
                failures.extend(check(&path.with_extension("warn"), &warnings));
            }
            Err(e) => failures.push(format!("{}: unexpected errors:\n{e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn err_configs_fail_with_their_message() {
    let files = configs("err");
    assert!(files.len() >= 15, "expected at least 15 broken configs");
    let mut failures = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        match stktagg_config::parse_str(&text, &file_name(&path)) {
            Ok(_) => failures.push(format!("{}: parsed, but should fail", path.display())),
            Err(e) => failures.extend(check(&path.with_extension("err"), &format!("{e}\n"))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seed's configurations are kept byte for byte: they are the product's
/// contract and must never be "fixed" to make a test pass.
#[test]
fn seed_configs_are_verbatim() {
    let seed = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/seed/hapee-2.3r1-stktagg-ha-setup.txt"),
    );
    // The seed lives outside the repository; when it is present, check against it.
    let Ok(seed) = seed else { return };
    for name in ["seed-aggr1", "seed-aggr2", "seed-aggr3", "seed-aggr4"] {
        let cfg = fs::read_to_string(data_dir("ok").join(format!("{name}.cfg"))).unwrap();
        assert!(
            seed.contains(cfg.trim_end()),
            "{name}.cfg differs from the seed"
        );
    }
}
