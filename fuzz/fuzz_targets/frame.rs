//! The protocol's frame decoding on any bytes: the length prefix, and the
//! request and reply decoders, whose fast paths must give what the
//! reference deserializer gives whenever they give anything.
#![no_main]
use clinit::proto::{RequestFrame, ResponseFrame, decode_reply, decode_request, frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data);
    if let Ok(fast) = decode_request(data) {
        let reference: RequestFrame =
            serde_json::from_slice(data).expect("the fast path took what the reference refuses");
        assert_eq!(fast, reference);
    }
    if let Ok(fast) = decode_reply(data) {
        let reference: ResponseFrame =
            serde_json::from_slice(data).expect("the fast path took what the reference refuses");
        assert_eq!(fast, reference);
    }
});
