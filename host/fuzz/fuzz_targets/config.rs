//! The configuration parser and its checks, on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = sluice::config::Config::parse(text, "fuzz.toml", std::path::PathBuf::from("/nonexistent"));
});
