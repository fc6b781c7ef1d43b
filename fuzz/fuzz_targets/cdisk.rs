//! See `micro_vmm::fuzz_entry::cdisk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::cdisk(data));
