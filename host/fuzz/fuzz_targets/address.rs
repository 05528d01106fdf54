//! MAIL FROM / RCPT TO arguments: split into path and parameters, then the mailbox checks.
//! A mailbox that passes must pass again, unchanged, when written out and parsed anew.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::address::{parse_mailbox, split_path_and_params};

fuzz_target!(|arg: &str| {
    let Ok((path, _params)) = split_path_and_params(arg) else { return };
    if path.is_empty() {
        return;
    }
    if let Ok(mailbox) = parse_mailbox(&path) {
        let written = mailbox.address();
        let again = parse_mailbox(&written).expect("a checked mailbox parses again");
        assert_eq!(again.address(), written);
    }
});
