//! Payload metadata framing and protobuf: arbitrary bytes never panic, and whatever decodes
//! re-encodes to something that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use micro_vmm::payload::metadata::Metadata;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metadata::decode_framed(data) else {
        return;
    };
    // The streaming reader agrees with the slice reader.
    let mut reader = data;
    assert!(Metadata::read_framed(&mut reader).ok().as_ref() == Some(&m));
    // Re-encoding is canonical, never longer than the body it came from (at most the cap).
    let framed = m.encode_framed().expect("a decoded message re-encodes");
    assert_eq!(Metadata::decode_framed(&framed).expect("re-decodes"), m);
});
