//! See `micro_vmm::fuzz_entry::composite_io`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::composite_io(data));
