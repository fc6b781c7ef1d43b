//! See `micro_vmm::fuzz_entry::apk_signing_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::apk_signing_block(data));
