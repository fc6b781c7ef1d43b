//! See `micro_vmm::fuzz_entry::gpt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::gpt(data));
