//! The DATA receiver: the same bytes fed whole and in two pieces (split where the first byte
//! says) must give the same result — the same end, the same body, the same verdict on size
//! and bare line endings — the body kept never exceeds the limit, and nothing is kept of a
//! message over it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::data::{DataDecoder, DataEvent};

const LIMIT: usize = 4096;

fn decode(pieces: &[&[u8]]) -> (Option<usize>, bool, bool, Vec<u8>) {
    let mut decoder = DataDecoder::new(LIMIT);
    let mut offset = 0;
    for piece in pieces {
        match decoder.feed(piece) {
            DataEvent::More => offset += piece.len(),
            DataEvent::End(n) => {
                assert!(n <= piece.len(), "end beyond the input");
                let too_big = decoder.too_big();
                return (Some(offset + n), false, too_big, decoder.into_body());
            }
            DataEvent::BareLineEnding => return (None, true, false, Vec::new()),
        }
    }
    (None, false, decoder.too_big(), Vec::new())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let at = usize::from(split) % (input.len() + 1);
    let whole = decode(&[input]);
    let parts = decode(&[&input[..at], &input[at..]]);
    assert_eq!(whole, parts, "split at {at} changed the result");
    assert!(whole.3.len() <= LIMIT);
    if whole.2 {
        assert!(whole.3.is_empty(), "nothing is kept of a message over the limit");
    }
});
