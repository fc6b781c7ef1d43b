//! A guest walks the ACPI tables (RSDP -> XSDT -> FADT/MADT/DSDT) and wakes every other CPU
//! through INIT/SIPI; each vCPU runs on its own thread.

mod common;

use common::probe;

#[test]
fn guest_finds_valid_tables_with_the_right_cpu_count() {
    for cpus in ["1", "2"] {
        let o = probe("probe-elf64.elf", "probe=acpi", &["--cpus", cpus]);
        assert_eq!(o.code, Some(0), "{o:?}");
        assert!(
            o.has_line("ACPI RSDP addr=0xe0000 rev=2 csum=ok xsdt=")
                || o.with_prefix("ACPI RSDP addr=0xe0000 rev=2 csum=ok").len() == 1,
            "{o:?}"
        );
        let tables = o.with_prefix("ACPI ");
        for sig in ["XSDT", "FACP", "APIC", "DSDT"] {
            let line = tables
                .iter()
                .find(|l| l.starts_with(&format!("ACPI {sig} ")))
                .unwrap_or_else(|| panic!("no {sig}: {o:?}"));
            assert!(line.ends_with("csum=ok"), "{line}");
        }
        assert!(o.has_line("ACPI DONE"), "{o:?}");
        assert!(
            o.has_line(&format!(
                "MADT lapics={cpus} ioapics=1 lapic_addr=0xfee00000"
            )),
            "{o:?}"
        );
        assert!(
            o.has_line(&format!("MADT ioapic id={cpus} addr=0xfec00000 gsi=0")),
            "{o:?}"
        );
        let fadt = &o.with_prefix("FADT ")[0];
        assert!(fadt.contains("sleep_ctl=1:0x600"), "{fadt}");
        assert!(fadt.contains("sleep_sts=1:0x601"), "{fadt}");
        assert!(fadt.contains("reset=1:0xcf9:0x6"), "{fadt}");
        for name in ["_S5_", "PNP0501", "QEMU0001", "ACPI0007"] {
            assert!(o.has_line(&format!("DSDT has {name}")), "{name}: {o:?}");
        }
    }
}

#[test]
fn pvh_guest_finds_the_rsdp_too() {
    let o = probe("probe-pvh.elf", "probe=acpi", &["--cpus", "2"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.has_line("MADT lapics=2 ioapics=1 lapic_addr=0xfee00000"),
        "{o:?}"
    );
}

#[test]
fn every_vcpu_runs() {
    let o = probe("probe-elf64.elf", "probe=smp", &["--cpus", "2"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("CPU 1 up"), "{o:?}");
    assert!(o.has_line("SMP cpus=2 up=2"), "{o:?}");
}
