//! Fuzz the HTTP probe's response judge: any bytes, any split point.
//! Invariants: a prefix that decides agrees with the whole; and a
//! response of `max` bytes or more is always decided (a server that sends
//! an endless status line must not hold a probe until its timeout).
#![no_main]

use coffey::health::http_verdict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = http_verdict(data, None, 512);
    // A prefix can only be undecided or agree with the whole (once the
    // status line is in, more bytes cannot change the verdict).
    for k in 0..data.len().min(64) {
        if let Some(v) = http_verdict(&data[..k], None, 512) {
            if let Ok(_) | Err(coffey::health::ProbeError::HttpStatus(_)) = v {
                assert_eq!(Some(v), full);
            }
        }
    }
    if data.len() >= 512 {
        assert!(full.is_some(), "{} bytes and still undecided", data.len());
    }
    let _ = http_verdict(data, Some(204), 512);
});
