//! The message adapter handed to policies: parse any bytes as a message and read everything a
//! policy can ask for, bounded bodies included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::policy::ParsedMessage;
use sluice::policy::message::truncate_utf8;

fuzz_target!(
    init: {
        // The adapter catches panics of the MIME parser (and falls back to headers only):
        // such a panic must not count as a crash. One that escapes still aborts the run.
        let _ = std::panic::take_hook();
    },
    |raw: &[u8]| {
    let message = ParsedMessage::parse(raw.to_vec());
    assert_eq!(message.raw(), raw);
    let _ = message.header("subject");
    let _ = message.header_all("received");
    for (name, value) in message.headers() {
        let _ = (name.len(), value.len());
    }
    let _ = (message.subject(), message.date(), message.message_id());
    for list in [message.from(), message.to(), message.cc(), message.reply_to()] {
        let _ = list.len();
    }
    for body in [message.text_body(), message.html_body()].into_iter().flatten() {
        for max in [0, 1, 3, 64, 4096] {
            let cut = truncate_utf8(body, max);
            assert!(cut.len() <= max as usize);
        }
    }
    let _ = message.attachments().len();
    }
);
