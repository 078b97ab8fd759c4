//! The parser never panics, whatever the input: random bytes, random lines built
//! from the language's own words, and random edits of valid configurations.

use proptest::prelude::*;

const VALID: &[&str] = &[
    include_str!("../data/ok/seed-aggr1.cfg"),
    include_str!("../data/ok/seed-aggr4.cfg"),
    include_str!("../data/ok/full.cfg"),
    include_str!("../data/ok/ipv6-hostnames.cfg"),
    include_str!("../data/ok/crlf-tabs.cfg"),
    include_str!("../data/ok/tls.cfg"),
    stktagg_config::DEFAULT_CONFIG,
];

const WORDS: &[&str] = &[
    "global",
    "aggregations",
    "peer",
    "local",
    "down",
    "up",
    "group",
    "from",
    "to",
    "any",
    "forward",
    "option",
    "no",
    "teach-back",
    "default-server",
    "ssl",
    "no-ssl",
    "crt",
    "ca-file",
    "verify",
    "sni",
    "required",
    "stats",
    "socket",
    "mode",
    "level",
    "prometheus",
    "log-level",
    "timeout",
    "hello",
    "idle",
    "tune.heartbeat",
    "tune.max-pending",
    ".a",
    ".b",
    ".",
    "x",
    "1",
    "0",
    "65536",
    "127.0.0.1:1",
    "[::1]:2",
    "[::1",
    "::1:3",
    ":4",
    "host:",
    "#",
    "#c",
    "\t",
    "  ",
    "\r",
    "\n",
    "é",
    "[",
    "]",
    ":",
];

fn word_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..60).prop_map(|ws| {
        let mut s = String::new();
        for (i, w) in ws.iter().enumerate() {
            s.push_str(w);
            if i % 3 == 0 {
                s.push(' ');
            }
        }
        s
    })
}

fn mutated() -> impl Strategy<Value = String> {
    (
        prop::sample::select(VALID),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..8),
    )
        .prop_map(|(base, edits)| {
            let mut chars: Vec<char> = base.chars().collect();
            for (idx, ch, op) in edits {
                if chars.is_empty() {
                    chars.push(ch);
                    continue;
                }
                let i = idx.index(chars.len());
                match op {
                    0 => chars[i] = ch,
                    1 => chars.insert(i, ch),
                    _ => {
                        chars.remove(i);
                    }
                }
            }
            chars.into_iter().collect()
        })
}

fn exercise(text: &str) {
    match stktagg_config::parse_str(text, "fuzz.cfg") {
        Ok(cfg) => {
            for w in &cfg.warnings {
                let _ = w.to_string();
            }
        }
        Err(e) => {
            assert!(!e.errors.is_empty(), "an Err must hold at least one error");
            // Rendering slices the quoted line: it must not panic either.
            let rendered = e.to_string();
            assert!(rendered.contains("error:"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_words(text in word_soup()) {
        exercise(&text);
    }

    #[test]
    fn random_edits_of_valid_configs(text in mutated()) {
        exercise(&text);
    }
}
