//! See `micro_vmm::fuzz_entry::vsock_muxer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro_vmm::fuzz_entry::vsock_muxer(data));
