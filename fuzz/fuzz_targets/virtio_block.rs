//! See `micro_vmm::fuzz_entry::virtio_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::virtio_block(data));
