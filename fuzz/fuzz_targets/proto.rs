//! Fuzz the control-protocol codec and the connection machine: arbitrary
//! bytes must decode to a frame or an error, never panic; whatever decodes
//! must re-encode to the same bytes, except a reply under a retired tag
//! (still read, never sent), which must re-encode under its current tag to
//! a frame that decodes to the same reply.
#![no_main]

use coffey::control::conn::{Conn, IN_BUF};
use coffey::control::proto::{decode_reply, decode_request, encode_reply, encode_request, tag};
use coffey::time::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, n)) = decode_request(data) {
        let mut buf = [0u8; 2048];
        let m = encode_request(&req, &mut buf).expect("a decoded request re-encodes");
        assert_eq!(&buf[..m], &data[..n]);
    }
    if let Ok((rep, n)) = decode_reply(data) {
        let mut buf = vec![0u8; 8192];
        let m = encode_reply(&rep, &mut buf).expect("a decoded reply re-encodes");
        if tag::RETIRED.contains(&data[1]) {
            assert!(
                !tag::RETIRED.contains(&buf[1]),
                "a retired tag is never sent"
            );
            assert_eq!(decode_reply(&buf[..m]), Ok((rep, m)));
        } else {
            assert_eq!(&buf[..m], &data[..n]);
        }
    }
    // The daemon's side: bytes arrive in arbitrary chunks.
    let mut out = [0u8; 256];
    let mut c = Conn::new(&mut out, Instant(0));
    let mut frame = [0u8; IN_BUF];
    for chunk in data.chunks(7) {
        let space = c.read_space();
        let n = chunk.len().min(space.len());
        space[..n].copy_from_slice(&chunk[..n]);
        c.did_read(n, Instant(1));
        while let Ok(Some(k)) = c.take_frame(&mut frame) {
            let _ = decode_request(&frame[..k]);
        }
    }
});
