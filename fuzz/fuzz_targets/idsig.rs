//! Parses arbitrary bytes as an `.idsig`; whatever parses must re-serialize to the same bytes
//! (the parser rejects anything the writer would not produce, except the opaque signing info
//! blocks, which are kept) and parse again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micro_vmm::payload::idsig::Idsig;

fuzz_target!(|data: &[u8]| {
    if let Ok(idsig) = Idsig::parse(data, "fuzz") {
        let bytes = idsig.to_bytes().expect("a parsed idsig re-encodes");
        assert_eq!(bytes, data, "re-encoding changed the bytes");
        let again = Idsig::parse(&bytes, "fuzz").expect("re-encoded idsig parses");
        assert_eq!(again, idsig);
    }
});
