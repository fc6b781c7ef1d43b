//! See `micro_vmm::fuzz_entry::apk_zip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::apk_zip(data));
