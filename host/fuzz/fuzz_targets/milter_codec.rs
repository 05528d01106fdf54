//! The milter protocol as an MTA might send it, in any bytes and any splits: the decoder
//! never panics, takes nothing past a bad packet, and a decoded command written out again
//! decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::milter::codec::{Command, Decoder, encode_command};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let split = (split as usize).min(bytes.len());
    let mut decoder = Decoder::default();
    let mut commands = Vec::new();
    for part in [&bytes[..split], &bytes[split..]] {
        decoder.feed(part);
        loop {
            match decoder.next_command() {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    for command in commands {
        if let Command::Header { value, .. } = &command
            && value.contains(&0)
        {
            continue;
        }
        let mut again = Decoder::default();
        again.feed(&encode_command(&command));
        assert_eq!(again.next_command().expect("written out, it decodes"), Some(command));
    }
});
