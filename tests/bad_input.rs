//! Bad input gets a clear message and exit 35 (invalid arguments) or 1 — never a panic.

mod common;

use common::{guest, run};

fn assert_rejected(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    assert_eq!(o.code, Some(code), "{args:?}: {o:?}");
    assert!(
        o.stderr.contains(needle),
        "{args:?}: expected {needle:?} in {o:?}"
    );
    assert!(!o.stderr.contains("panicked"), "{o:?}");
}

fn temp(name: &str, bytes: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("mvmm-bad-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn missing_and_garbage_kernels() {
    assert_rejected(
        &["run", "--kernel", "/nonexistent/bzImage"],
        35,
        "No such file",
    );
    let junk = temp("junk", &[0x90; 8192]);
    assert_rejected(
        &["run", "--kernel", &junk],
        35,
        "neither a bzImage nor an ELF",
    );
    let empty = temp("empty", b"");
    assert_rejected(
        &["run", "--kernel", &empty],
        35,
        "neither a bzImage nor an ELF",
    );
    let mut elf = b"\x7fELF".to_vec();
    elf.resize(100, 0xff);
    let bad_elf = temp("elf", &elf);
    assert_rejected(&["run", "--kernel", &bad_elf], 35, "cannot load kernel");
    let dir = std::env::temp_dir();
    assert_rejected(
        &["run", "--kernel", dir.to_str().unwrap()],
        35,
        "not a regular file",
    );
    let bad_fw = temp("fw", b"");
    assert_rejected(&["run", "--bios", &bad_fw], 35, "firmware");
}

#[test]
fn create_idsig_refuses_what_is_not_a_zip() {
    let out = std::env::temp_dir().join(format!("mvmm-bad-{}-out.idsig", std::process::id()));
    let out = out.to_str().unwrap();
    let empty = temp("empty.apk", b"");
    assert_rejected(&["create-idsig", &empty, out], 35, "is not an APK");
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let noise = temp("noise.apk", &noise);
    assert_rejected(&["create-idsig", &noise, out], 35, "is not an APK");
    assert_rejected(
        &["create-idsig", "/nonexistent/a.apk", out],
        35,
        "No such file",
    );
    assert!(!std::path::Path::new(out).exists());
}

#[test]
fn initrd_larger_than_memory() {
    let g = guest("probe-elf64.elf");
    let big = std::env::temp_dir().join(format!("mvmm-bad-{}-initrd", std::process::id()));
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap();
    assert_rejected(
        &[
            "run",
            "--kernel",
            &g,
            "--initrd",
            big.to_str().unwrap(),
            "--mem",
            "32",
        ],
        35,
        "does not fit in guest memory",
    );
    std::fs::remove_file(&big).unwrap();
}

#[test]
fn bad_numbers_and_flags() {
    let g = guest("probe-elf64.elf");
    assert_rejected(&["run", "--kernel", &g, "--cpus", "0"], 35, "--cpus 0");
    assert_rejected(&["run", "--kernel", &g, "--cpus", "255"], 35, "--cpus 255");
    assert_rejected(&["run", "--kernel", &g, "--mem", "0"], 35, "--mem 0");
    assert_rejected(
        &["run", "--kernel", &g, "--mem", "abc"],
        35,
        "invalid value",
    );
    assert_rejected(
        &["run", "--kernel", &g, "--serial", "tcp:1"],
        35,
        "--serial",
    );
    assert_rejected(&["run", "--kernel", &g, "--frobnicate"], 35, "--frobnicate");
    assert_rejected(&["run"], 35, "give either --kernel or --bios");
    assert_rejected(&["bogus-command"], 35, "bogus-command");
    // Durations that would overflow a deadline are refused when parsed.
    let max = u64::MAX.to_string();
    assert_rejected(
        &[
            "--app",
            "a.apk",
            "a.idsig",
            "c.json",
            "--hangup-timeout",
            &max,
        ],
        35,
        "--hangup-timeout",
    );
    assert_rejected(&["vm", "stop", "x", "--timeout", &max], 35, "--timeout");
    assert_rejected(&["vm", "stop", "x", "--timeout", "3601"], 35, "0..=3600");
    let long = "x".repeat(5000);
    assert_rejected(
        &["run", "--kernel", &g, "--cmdline", &long],
        35,
        "command line",
    );
}

#[test]
fn more_vcpus_than_kvm_allows() {
    let g = guest("probe-elf64.elf");
    // 254 passes configuration; this host's KVM allows fewer (NR_VCPUS).
    let o = run(&[
        "run",
        "--kernel",
        &g,
        "--cpus",
        "254",
        "--console-in",
        "none",
    ]);
    if o.code == Some(0) {
        eprintln!("this KVM runs 254 vCPUs; nothing to reject");
        return;
    }
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("this host's KVM allows at most"), "{o:?}");
}

#[test]
fn unwritable_output_file() {
    let g = guest("probe-elf64.elf");
    assert_rejected(
        &[
            "run",
            "--kernel",
            &g,
            "--serial",
            "file:/nonexistent/dir/out",
        ],
        35,
        "cannot open --serial output",
    );
}

#[test]
fn no_dev_kvm() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot hide /dev/kvm in a mount namespace; not asserted");
        return;
    }
    let g = guest("probe-elf64.elf");
    let script = format!(
        "mount -t tmpfs none /dev && exec {} run --kernel {g} --console-in none",
        common::bin()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open /dev/kvm"), "{stderr}");
}
