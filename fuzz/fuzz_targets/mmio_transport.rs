//! See `micro_vmm::fuzz_entry::mmio_transport`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::mmio_transport(data));
