//! The APK (zip) reader on arbitrary bytes: opening, and reading the config entry with a cap,
//! never panic and never return more than the cap.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use micro_vmm::payload::apk::Apk;

const CAP: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(mut apk) = Apk::from_reader("fuzz.apk", Cursor::new(data)) else {
        return;
    };
    assert!(apk.zip_len() <= data.len() as u64);
    if let Ok(bytes) = apk.read_entry("assets/vm_config.json", CAP) {
        assert!(bytes.len() as u64 <= CAP);
    }
});
