//! The console: input reaches the guest and comes back, the log port goes to --log, output
//! goes to files, and a flood of input does not grow micro-vmm's memory.

mod common;

use common::{guest, run, run_with_input, spawn};
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn stdin_reaches_the_guest_and_its_answer_comes_back() {
    let g = guest("probe-elf64.elf");
    let o = run_with_input(
        &[
            "run",
            "--kernel",
            &g,
            "--cmdline",
            "probe=echo exit=poweroff",
        ],
        b"hello guest\nsecond line\nquit\n",
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("ECHO READY"), "{o:?}");
    assert!(o.has_line("ECHO hello guest"), "{o:?}");
    assert!(o.has_line("ECHO second line"), "{o:?}");
}

#[test]
fn log_port_goes_to_log_and_serial_to_file() {
    let dir = std::env::temp_dir().join(format!("mvmm-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log.txt");
    let serial = dir.join("serial.txt");
    let g = guest("probe-elf64.elf");
    let log_arg = format!("file:{}", log.display());
    let serial_arg = format!("file:{}", serial.display());
    let o = run(&[
        "run",
        "--kernel",
        &g,
        "--cmdline",
        "probe=log exit=poweroff",
        "--console-in",
        "none",
        "--log",
        &log_arg,
        "--serial",
        &serial_arg,
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.is_empty(), "serial went to the file: {o:?}");
    let serial_text = std::fs::read_to_string(&serial).unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        serial_text.contains("PROBE-UP entry=elf64"),
        "{serial_text}"
    );
    assert!(log_text.contains("LOG hello from ttyS1"), "{log_text}");
    assert!(!serial_text.contains("LOG hello"), "{serial_text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_port_is_discarded_by_default() {
    let o = common::probe("probe-elf64.elf", "probe=log exit=poweroff", &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("LOG sent"), "{o:?}");
    assert!(!o.stdout.contains("hello from ttyS1"), "{o:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn an_input_flood_does_not_grow_memory() {
    // The guest never reads its UART: micro-vmm must leave the flood in the pipe.
    let g = guest("probe-elf64.elf");
    let mut child = spawn(&["run", "--kernel", &g, "--cmdline", "exit=halt"], true);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let start = Instant::now();
        let mut sent = 0usize;
        // Blocks once the pipe is full; ends when the VMM exits (EPIPE).
        while start.elapsed() < Duration::from_secs(30) {
            match stdin.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let o = common::wait(child, common::TIMEOUT);
    let sent = feeder.join().unwrap();
    assert_eq!(o.code, Some(143), "{o:?}");
    assert!(sent < 4 << 20, "micro-vmm swallowed {sent} bytes of input");
    assert!(
        after < before + 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
