//! See `micro_vmm::fuzz_entry::control_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::control_protocol(data));
