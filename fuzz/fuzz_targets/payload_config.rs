//! The payload config JSON parser: arbitrary bytes never panic; an accepted config passes
//! its own checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use micro_vmm::payload::config::VmPayloadConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = VmPayloadConfig::from_json(data, "fuzz.json") {
        assert!(!c.os_name().is_empty());
        if let Some(task) = &c.task {
            assert!(!task.command.is_empty());
        }
        assert!(c.extra_apks.iter().all(|a| a.path.starts_with('/')));
    }
});
