//! Each way a VM can end gives its documented exit code and one line on stderr.

mod common;

use common::{guest, probe, spawn, wait};
use std::time::Duration;

fn exit_with(action: &str) -> common::Outcome {
    probe("probe-elf64.elf", &format!("exit={action}"), &[])
}

#[test]
fn acpi_poweroff_is_0() {
    let o = exit_with("poweroff");
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("PROBE-EXIT poweroff"), "{o:?}");
    assert!(
        o.stderr
            .contains("guest powered off (ACPI S5); exit code 0"),
        "{o:?}"
    );
}

#[test]
fn acpi_reset_register_is_32() {
    let o = exit_with("reset-acpi");
    assert_eq!(o.code, Some(32), "{o:?}");
    assert!(o.stderr.contains("ACPI reset register"), "{o:?}");
}

#[test]
fn i8042_reset_is_32() {
    let o = exit_with("i8042");
    assert_eq!(o.code, Some(32), "{o:?}");
    assert!(o.stderr.contains("i8042"), "{o:?}");
}

#[test]
fn triple_fault_is_32() {
    let o = exit_with("triple");
    assert_eq!(o.code, Some(32), "{o:?}");
    assert!(o.stderr.contains("triple fault"), "{o:?}");
}

#[test]
fn pvpanic_is_34() {
    let o = exit_with("panic");
    assert_eq!(o.code, Some(34), "{o:?}");
    assert!(o.has_line("PVPANIC caps=0x3"), "{o:?}");
    assert!(o.stderr.contains("guest panicked (pvpanic)"), "{o:?}");
}

#[test]
fn kvm_internal_error_is_33_with_suberror_and_rip() {
    if common::hardware_kvm() {
        // xgetbv is only unemulatable under this project's PVM KVM; on VMX/SVM it runs.
        eprintln!("hardware KVM: internal-error path not reachable with xgetbv; not asserted");
        return;
    }
    let o = exit_with("internal");
    assert_eq!(o.code, Some(33), "{o:?}");
    assert!(o.stderr.contains("KVM internal error: suberror 1"), "{o:?}");
    assert!(o.stderr.contains("rip 0x"), "{o:?}");
}

#[test]
fn unclaimed_ports_and_mmio_read_as_ones_and_the_vm_goes_on() {
    let o = exit_with("mmio");
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("MMIO read=0xff"), "{o:?}");
    assert!(o.has_line("PIO read=0xff"), "{o:?}");
}

fn stop_with_signal(sig: i32, expected: i32) {
    let g = guest("probe-elf64.elf");
    let child = spawn(
        &[
            "run",
            "--kernel",
            &g,
            "--cmdline",
            "exit=halt",
            "--console-in",
            "none",
        ],
        false,
    );
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || wait(child, common::TIMEOUT));
    // Let the guest reach its halt loop.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    let o = waiter.join().unwrap();
    assert_eq!(o.code, Some(expected), "{o:?}");
    assert!(
        o.has_line("PROBE-EXIT halt"),
        "output before the signal is kept: {o:?}"
    );
    assert!(o.stderr.contains("stopped by signal"), "{o:?}");
}

#[test]
fn sigterm_stops_cleanly() {
    stop_with_signal(libc::SIGTERM, 143);
}

#[test]
fn sigint_stops_cleanly() {
    stop_with_signal(libc::SIGINT, 130);
}
