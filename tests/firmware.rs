//! `--bios`: a tiny real-mode firmware starts at the reset vector, runs from its high mapping
//! and from the copy below 1 MiB, and powers off.

mod common;

use common::{guest, run};

#[test]
fn firmware_runs_from_the_reset_vector_and_powers_off() {
    let fw = guest("firmware.bin");
    let o = run(&["run", "--bios", &fw, "--console-in", "none"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("FIRMWARE-UP"), "{o:?}");
    assert!(o.has_line("FIRMWARE-LOW ok"), "{o:?}");
}

#[test]
fn firmware_with_more_memory_and_cpus() {
    let fw = guest("firmware.bin");
    let o = run(&[
        "run",
        "--bios",
        &fw,
        "--console-in",
        "none",
        "--mem",
        "4096",
        "--cpus",
        "2",
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("FIRMWARE-LOW ok"), "{o:?}");
}
