//! The PROXY protocol header a trusted load balancer sends first: any bytes, cut anywhere. A
//! header is never longer than what was read, and reading more never changes a verdict
//! already given (a prefix that is a header or invalid stays so).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::proxy::{Parsed, parse};

fuzz_target!(|bytes: &[u8]| {
    let whole = parse(bytes);
    if let Parsed::Header(_, used) = whole {
        assert!(used <= bytes.len());
    }
    for cut in 0..bytes.len() {
        match parse(&bytes[..cut]) {
            Parsed::Incomplete => {}
            Parsed::Header(origin, used) => assert_eq!(whole, Parsed::Header(origin, used), "cut at {cut}"),
            Parsed::Invalid(_) => assert!(matches!(whole, Parsed::Invalid(_)), "cut at {cut}"),
        }
    }
});
