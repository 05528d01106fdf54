//! Byte classes counted eight bytes at a time (in a `u64`, so also where the WebAssembly
//! build has no vector instructions): the body rules read every byte of a text, and on a
//! 100 KiB message a byte at a time was most of the policy's time.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is ASCII and within `lo..=hi` (`hi` < 0x7f).
#[inline]
fn in_range(word: u64, lo: u8, hi: u8) -> u64 {
    let ascii = !word & HIGH;
    let low7 = word & !HIGH;
    // Per byte, x + (0x80 - bound) has its high bit set exactly when x >= bound; x < 0x80 and
    // the addend at most 0x80, so no byte carries into the next.
    let at_least_lo = low7.wrapping_add(ONES * u64::from(0x80 - lo));
    let above_hi = low7.wrapping_add(ONES * u64::from(0x80 - (hi + 1)));
    at_least_lo & !above_hi & ascii
}

fn words(bytes: &[u8]) -> (impl Iterator<Item = u64> + '_, &[u8]) {
    let chunks = bytes.chunks_exact(8);
    let rest = chunks.remainder();
    (chunks.map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())), rest)
}

/// ASCII letters and, of them, capitals in `bytes`.
pub fn ascii_letters_and_capitals(bytes: &[u8]) -> (usize, usize) {
    let (mut letters, mut caps) = (0usize, 0usize);
    let (whole, rest) = words(bytes);
    for word in whole {
        let upper = in_range(word, b'A', b'Z');
        let lower = in_range(word, b'a', b'z');
        caps += upper.count_ones() as usize;
        letters += (upper | lower).count_ones() as usize;
    }
    for &b in rest {
        caps += usize::from(b.is_ascii_uppercase());
        letters += usize::from(b.is_ascii_alphabetic());
    }
    (letters, caps)
}

/// Bytes of `bytes` that are not ASCII (0x80 and above).
pub fn count_8bit(bytes: &[u8]) -> usize {
    let (whole, rest) = words(bytes);
    whole.map(|w| (w & HIGH).count_ones() as usize).sum::<usize>()
        + rest.iter().filter(|b| **b >= 0x80).count()
}

/// Whether `bytes` has a run of at least `len` lower-case ASCII letters.
pub fn has_lowercase_run(bytes: &[u8], len: usize) -> bool {
    // A run of 15 or more covers a whole aligned word: where no word is all lower case, no
    // such run exists and the byte-wise count is skipped.
    if len >= 15 {
        let (whole, _) = words(bytes);
        if !whole.into_iter().any(|w| in_range(w, b'a', b'z') == HIGH) {
            return false;
        }
    }
    let mut run = 0;
    bytes.iter().any(|b| {
        run = if b.is_ascii_lowercase() { run + 1 } else { 0 };
        run >= len
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_a_byte_at_a_time() {
        let mut samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"Hello WORLD, this is Mail @[`{ ~ \x7f".to_vec(),
            "Grüße AUS München — ÄÖÜ äöü".as_bytes().to_vec(),
            (0u8..=255).collect(),
        ];
        let mut seed = 7u32;
        for n in [1, 7, 8, 9, 63, 64, 1000] {
            samples.push(
                (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (seed >> 16) as u8
                    })
                    .collect(),
            );
        }
        for bytes in &samples {
            assert_eq!(count_8bit(bytes), bytes.iter().filter(|b| **b >= 0x80).count());
            let caps = bytes.iter().filter(|b| b.is_ascii_uppercase()).count();
            let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
            assert_eq!(ascii_letters_and_capitals(bytes), (letters, caps), "{bytes:?}");
        }
    }

    #[test]
    fn lowercase_runs() {
        let run = |s: &str, len| has_lowercase_run(s.as_bytes(), len);
        assert!(run("xx abcdefghijklmnopqrstuvwxyz yy", 22));
        assert!(!run("xx abcdefghijklmnopqrstu yy", 22));
        for shift in 0..8 {
            let text = format!("{}{}!", "A".repeat(shift), "q".repeat(22));
            assert!(run(&text, 22), "{shift}");
            let short = format!("{}{}!", "A".repeat(shift), "q".repeat(21));
            assert!(!run(&short, 22), "{shift}");
        }
        assert!(!run("Abcdefghijklmno Pqrstuvwxyzabcd", 22));
        assert!(run("abc", 3));
    }
}
