//! See `micro_vmm::fuzz_entry::disk_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::disk_open(data));
