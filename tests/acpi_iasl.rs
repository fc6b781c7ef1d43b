//! Every ACPI table micro-vmm builds disassembles cleanly with ACPICA's `iasl -d`.
//! Needs `iasl` (Debian package acpica-tools); `.ci/run` installs it. Without it the test fails
//! rather than passing silently.

use std::process::Command;

use micro_vmm::boot::acpi::{AcpiConfig, MmioDeviceInfo, build};

fn disassemble_all(vcpus: u8, mmio: &[MmioDeviceInfo]) {
    let dir = std::env::temp_dir().join(format!(
        "mvmm-iasl-{}-{vcpus}-{}",
        std::process::id(),
        mmio.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = build(&AcpiConfig {
        vcpus,
        virtio_mmio: mmio,
    })
    .unwrap();
    // Skip the RSDP (not a described table for iasl -d); disassemble the others.
    for (_, bytes) in &tables.tables[1..] {
        let sig = std::str::from_utf8(&bytes[..4]).unwrap().to_lowercase();
        let path = dir.join(format!("{sig}.dat"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new("iasl")
            .arg("-d")
            .arg(&path)
            .current_dir(&dir)
            .output()
            .expect("iasl not found: install acpica-tools");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {sig} failed:\n{text}");
        assert!(
            !text.contains("Error") && !text.contains("error:"),
            "iasl -d {sig} reported errors:\n{text}"
        );
        let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).unwrap();
        if sig == "dsdt" {
            for want in [
                "PNP0501", "QEMU0001", "ACPI0007", "_S5_", "COM1", "COM2", "PEVT",
            ] {
                assert!(dsl.contains(want), "DSDT lacks {want}:\n{dsl}");
            }
            if !mmio.is_empty() {
                assert!(dsl.contains("LNRO0005"), "DSDT lacks LNRO0005:\n{dsl}");
            }
        }
        if sig == "apic" {
            assert_eq!(
                dsl.matches("Subtable Type : 00 [Processor Local APIC]")
                    .count(),
                usize::from(vcpus),
                "{dsl}"
            );
        }
    }
    if std::env::var_os("KEEP_IASL").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn tables_disassemble_without_errors() {
    disassemble_all(1, &[]);
    disassemble_all(8, &[]);
    let mmio = [
        MmioDeviceInfo {
            addr: 0xd000_0000,
            len: 0x1000,
            irq: 5,
        },
        MmioDeviceInfo {
            addr: 0xd000_1000,
            len: 0x1000,
            irq: 6,
        },
    ];
    disassemble_all(2, &mmio);
}
