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

#[test]
fn a_reader_that_never_reads_does_not_stall_the_guest() {
    // 100 KB of guest output into a pipe nobody reads (it holds 64 KB): the guest still runs
    // to its power-off, and micro-vmm exits, saying the reader stalled.
    let g = guest("probe-elf64.elf");
    let mut child = spawn(
        &[
            "run",
            "--kernel",
            &g,
            "--cmdline",
            "probe=flood exit=poweroff",
            "--console-in",
            "none",
        ],
        false,
    );
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < common::TIMEOUT,
            "micro-vmm hung on a stalled reader"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = err.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("guest powered off"), "{stderr}");
    assert!(stderr.contains("output reader stalled"), "{stderr}");
}

/// Opens a pseudo-terminal pair; returns (controller, terminal) fds.
fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut c, mut t) = (0, 0);
    // SAFETY: the out-pointers are valid; name, termios and winsize may be null.
    let r = unsafe {
        libc::openpty(
            &mut c,
            &mut t,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both fds were just created by openpty and are owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(c),
            std::os::fd::OwnedFd::from_raw_fd(t),
        )
    }
}

fn termios_of(fd: &std::os::fd::OwnedFd) -> libc::termios {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data filled in by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to write to.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t
}

#[test]
fn a_terminal_on_stdin_is_raw_while_running_and_restored_after() {
    use std::process::{Command, Stdio};
    let (_controller, term) = openpty();
    let before = termios_of(&term);
    assert_ne!(
        before.c_lflag & libc::ICANON,
        0,
        "a new pty starts in canonical mode"
    );
    let g = guest("probe-elf64.elf");
    for cmdline in ["exit=halt", "exit=poweroff"] {
        let mut child = Command::new(common::bin())
            .args(["run", "--kernel", &g, "--cmdline", cmdline])
            .stdin(Stdio::from(term.try_clone().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if cmdline == "exit=halt" {
            // While the VM runs, the terminal is raw (no line editing, no signals).
            let deadline = Instant::now() + Duration::from_secs(10);
            while termios_of(&term).c_lflag & libc::ICANON != 0 {
                assert!(Instant::now() < deadline, "terminal never went raw");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(termios_of(&term).c_lflag & libc::ISIG, 0);
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let st = child.wait().unwrap();
        assert!(matches!(st.code(), Some(0) | Some(143)), "{st}");
        let after = termios_of(&term);
        assert_eq!(
            after.c_lflag, before.c_lflag,
            "terminal restored after {cmdline}"
        );
        assert_eq!(after.c_iflag, before.c_iflag);
        assert_eq!(after.c_oflag, before.c_oflag);
    }
}
