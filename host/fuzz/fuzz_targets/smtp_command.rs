//! The SMTP command parser on any line a client can send (without its CRLF).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = sluice::smtp::command::parse(line);
});
