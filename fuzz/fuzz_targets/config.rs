//! Any text as a configuration file: it parses and resolves into a plan, or it
//! is refused with errors that point inside the text; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match stktagg_config::parse_str(text, "fuzz.cfg") {
        Ok(config) => {
            // What `parse_str` accepts must resolve: the daemon relies on it.
            if let Err(e) = stktagg_topology::resolve(&config) {
                panic!("accepted by parse_str, refused by resolve: {e}");
            }
        }
        Err(errors) => {
            let shown = errors.to_string();
            assert!(!shown.is_empty(), "an error without text");
        }
    }
});
