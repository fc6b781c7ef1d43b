//! See `micro_vmm::fuzz_entry::pio_bus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::pio_bus(data));
