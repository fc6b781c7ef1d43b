//! The sandbox (docs/security.md) on this machine's KVM with the probe guest: every thread
//! of `run` and of `--app` has a seccomp filter while the VM runs, a forbidden system call
//! kills the VMM with a message naming the thread and the call, landlock refuses a host file
//! the configuration does not name, and `--sandbox off` turns it all off.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Outcome, guest, wait};

/// 128 + SIGSYS: the exit code of a seccomp violation.
const EXIT_SECCOMP: i32 = 159;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mvmm-sbx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        Dir(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `run` with the probe halted (runs until stopped), a writable disk, vsock and --socket.
fn run_command(dir: &Dir, cmdline: &str, extra: &[&str]) -> Command {
    std::fs::write(dir.path("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let mut c = Command::new(common::bin());
    c.args(["run", "--kernel", &guest("probe-pvh.elf")])
        .args(["--cmdline", cmdline, "--mem", "64", "--cpus", "2"])
        .args(["--rwdisk", &dir.s("disk.img")])
        .args(["--vsock", &format!("cid=3,uds={}", dir.s("v.sock"))])
        .args(["--socket", &dir.s("c.sock")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// An APK for `--app` whose payload config is valid.
fn apk(dir: &Dir) -> PathBuf {
    let path = dir.path("app.apk");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file("AndroidManifest.xml", opts).unwrap();
    z.write_all(b"<manifest/>").unwrap();
    z.start_file("assets/vm_config.json", opts).unwrap();
    z.write_all(br#"{"task": {"type": "executable", "command": "/mnt/apk/bin/payload"}}"#)
        .unwrap();
    z.start_file("bin/payload", opts).unwrap();
    z.write_all(&[0x5a; 1000]).unwrap();
    z.finish().unwrap();
    path
}

/// `--app` with the probe standing in for the guest OS (as tests/app_tiny.rs does).
fn app_command(dir: &Dir, params: &str, extra: &[&str]) -> Command {
    let os = dir.path("os.json");
    let json = serde_json::json!({
        "kernel": guest("probe-pvh.elf"),
        "params": params,
        "memory_mib": 64,
        "platform_version": "~1.0",
    });
    std::fs::write(&os, json.to_string()).unwrap();
    let mut c = Command::new(common::bin());
    c.arg("--app")
        .arg(apk(dir))
        .arg(dir.path("app.idsig"))
        .arg("assets/vm_config.json")
        .arg("--os-config")
        .arg(&os)
        .args(["--socket", &dir.s("c.sock")])
        .args(extra)
        .env("TMPDIR", dir.path("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn connect(p: &Path) -> UnixStream {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(p) {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends one control request and reads its answer line.
fn ask(s: &UnixStream, r: &mut impl BufRead, req: &str) -> serde_json::Value {
    (&*s).write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
}

/// (thread name, seccomp mode) of every thread of `pid`.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue; // a short-lived helper that just ended
        };
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:\t"))
            .unwrap_or("?")
            .to_string();
        out.push((comm.trim().to_string(), mode));
    }
    out.sort();
    out
}

fn names(modes: &[(String, String)]) -> Vec<&str> {
    modes.iter().map(|(n, _)| n.as_str()).collect()
}

fn assert_all(modes: &[(String, String)], mode: &str) {
    assert!(
        modes.iter().all(|(_, m)| m == mode),
        "every thread should have Seccomp {mode}: {modes:?}"
    );
}

fn sigterm(child: &KillOnDrop) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Exercises the control socket's helper threads: a pause, a resume, a refused
/// connect-vsock (the probe has no vsock driver).
fn use_helpers(sock: &Path) {
    let s = connect(sock);
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(ask(&s, &mut r, r#"{"id":1,"method":"status"}"#)["result"].is_object());
    assert!(ask(&s, &mut r, r#"{"id":2,"method":"pause"}"#)["result"].is_object());
    assert!(ask(&s, &mut r, r#"{"id":3,"method":"resume"}"#)["result"].is_object());
    let v = ask(
        &s,
        &mut r,
        r#"{"id":4,"method":"connect-vsock","params":{"port":1234}}"#,
    );
    assert!(v["error"].is_object(), "{v}");
}

fn no_violation(o: &Outcome) {
    assert!(!o.stderr.contains("seccomp:"), "{o:?}");
    assert!(!o.stderr.contains("cannot sandbox"), "{o:?}");
}

#[test]
fn every_run_thread_is_filtered() {
    let dir = Dir::new("run");
    let child: Child = run_command(&dir, "exit=halt", &["--console-in", "stdin"])
        .spawn()
        .unwrap();
    let child = KillOnDrop::new(child);
    use_helpers(&dir.path("c.sock"));
    // A host connection to the vsock device (the guest never answers it).
    let mut v = connect(&dir.path("v.sock"));
    v.write_all(b"CONNECT 99\n").unwrap();
    let modes = seccomp_modes(child.id());
    for want in [
        "micro-vmm",
        "vcpu0",
        "vcpu1",
        "devices",
        "control",
        "out-stdout",
        "console-in",
    ] {
        assert!(names(&modes).contains(&want), "{want} missing: {modes:?}");
    }
    assert_all(&modes, "2");
    sigterm(&child);
    let o = wait(child, common::TIMEOUT);
    no_violation(&o);
    assert_eq!(o.code, Some(143), "{o:?}");
    assert!(!dir.path("c.sock").exists() && !dir.path("v.sock").exists());
}

#[test]
fn every_app_thread_is_filtered_and_the_work_directory_is_removed() {
    let dir = Dir::new("app");
    let log = dir.path("log.txt");
    let log_flag = format!("file:{}", log.display());
    let child = KillOnDrop::new(
        app_command(&dir, "exit=halt", &["--log", &log_flag])
            .spawn()
            .unwrap(),
    );
    use_helpers(&dir.path("c.sock"));
    let modes = seccomp_modes(child.id());
    for want in [
        "micro-vmm",
        "vcpu0",
        "devices",
        "control",
        "lifecycle",
        "out-stdout",
        "out-log",
    ] {
        assert!(names(&modes).contains(&want), "{want} missing: {modes:?}");
    }
    assert_all(&modes, "2");
    sigterm(&child);
    let o = wait(child, common::TIMEOUT);
    no_violation(&o);
    assert_eq!(o.code, Some(201), "{o:?}");
    assert!(o.stderr.contains("micro-vmm: VM stopped: KILLED"), "{o:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path("tmp")).unwrap().collect();
    assert!(left.is_empty(), "work directory left behind: {left:?}");
    assert!(log.exists(), "--log was not written");
}

#[test]
fn sandbox_off_filters_nothing() {
    let dir = Dir::new("off");
    let child = KillOnDrop::new(
        run_command(
            &dir,
            "exit=halt",
            &["--console-in", "none", "--sandbox", "off"],
        )
        .spawn()
        .unwrap(),
    );
    drop(connect(&dir.path("c.sock")));
    let t0 = Instant::now();
    let modes = loop {
        let modes = seccomp_modes(child.id());
        if names(&modes).contains(&"vcpu0") || t0.elapsed() > Duration::from_secs(20) {
            break modes;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(names(&modes).contains(&"vcpu0"), "{modes:?}");
    assert_all(&modes, "0");
    sigterm(&child);
    assert_eq!(wait(child, common::TIMEOUT).code, Some(143));
}

#[test]
fn a_forbidden_syscall_kills_the_vmm_with_a_clear_message() {
    if !cfg!(debug_assertions) {
        return; // the hook exists in debug builds only
    }
    for (kind, thread) in [
        ("vcpu", "vcpu"),
        ("devices", "devices"),
        ("output", "out-stdout"),
        ("control", "control"),
        ("main", "main"),
    ] {
        let dir = Dir::new(&format!("kill-{kind}"));
        let child = run_command(&dir, "exit=halt", &["--console-in", "none"])
            .env("MICRO_VMM_TEST_FORBIDDEN_SYSCALL", kind)
            .spawn()
            .unwrap();
        let o = wait(child, common::TIMEOUT);
        assert_eq!(o.code, Some(EXIT_SECCOMP), "{kind}: {o:?}");
        // Either vCPU may be first.
        let (start, end) = (
            format!("micro-vmm: seccomp: thread {thread}"),
            " made forbidden syscall 110 (getppid)",
        );
        assert!(
            o.stderr
                .lines()
                .any(|l| l.starts_with(&start) && l.ends_with(end)),
            "{kind}: {o:?}"
        );
    }
    // --app's lifecycle thread too.
    let dir = Dir::new("kill-lifecycle");
    let o = wait(
        app_command(&dir, "exit=halt", &[])
            .env("MICRO_VMM_TEST_FORBIDDEN_SYSCALL", "lifecycle")
            .spawn()
            .unwrap(),
        common::TIMEOUT,
    );
    assert_eq!(o.code, Some(EXIT_SECCOMP), "{o:?}");
    assert!(
        o.stderr
            .contains("micro-vmm: seccomp: thread lifecycle made forbidden syscall 110 (getppid)"),
        "{o:?}"
    );
}

#[test]
fn landlock_refuses_a_file_the_configuration_does_not_name() {
    if !cfg!(debug_assertions) {
        return; // the hook exists in debug builds only
    }
    let open = |dir: &Dir, sandbox: &str| {
        wait(
            run_command(
                dir,
                "exit=poweroff",
                &["--console-in", "none", "--sandbox", sandbox],
            )
            .env("MICRO_VMM_TEST_OPEN", "/etc/hostname")
            .spawn()
            .unwrap(),
            common::TIMEOUT,
        )
    };
    let dir = Dir::new("landlock");
    let o = open(&dir, "on");
    assert_eq!(o.code, Some(0), "{o:?}");
    if o.stderr
        .contains("landlock is not supported by this kernel")
    {
        // No landlock here: the warning is the check.
        assert!(
            o.stderr
                .contains("micro-vmm: sandbox test: opened /etc/hostname")
        );
    } else {
        assert!(
            o.stderr
                .contains("micro-vmm: sandbox test: cannot open /etc/hostname: Permission denied"),
            "{o:?}"
        );
    }
    let dir = Dir::new("landlock-off");
    let o = open(&dir, "off");
    assert!(
        o.stderr
            .contains("micro-vmm: sandbox test: opened /etc/hostname"),
        "{o:?}"
    );
}

#[test]
fn bad_sandbox_flags_are_argument_errors() {
    let dir = Dir::new("flags");
    for bad in [
        &["--uid", "1000"][..],
        &["--gid", "1000"],
        &["--sandbox", "maybe"],
        &["--uid", "-1", "--gid", "0"],
    ] {
        let o = wait(
            run_command(&dir, "exit=halt", bad).spawn().unwrap(),
            common::TIMEOUT,
        );
        assert_eq!(o.code, Some(35), "{bad:?}: {o:?}");
    }
    // --app refuses them the same way, before any VM.
    let o = wait(
        app_command(&dir, "exit=halt", &["--sandbox", "maybe"])
            .spawn()
            .unwrap(),
        common::TIMEOUT,
    );
    assert_eq!(o.code, Some(35), "{o:?}");
}

#[test]
fn an_unopenable_app_log_is_an_argument_error() {
    let dir = Dir::new("applog");
    let o = wait(
        app_command(&dir, "exit=halt", &["--log", "file:/nonexistent/dir/log"])
            .spawn()
            .unwrap(),
        common::TIMEOUT,
    );
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("cannot open --log output"), "{o:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path("tmp")).unwrap().collect();
    assert!(left.is_empty(), "work directory left behind: {left:?}");
}

#[test]
fn dropping_to_another_user_keeps_the_control_socket_working_and_removable() {
    use std::os::unix::fs::PermissionsExt;
    if !common::can_switch_users() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let d = Dir::new("uid");
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = d.path("closed");
    let open = d.path("open");
    for (dir, mode) in [(&closed, 0o755), (&open, 0o777)] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let probe = |sock: &Path| {
        let mut c = Command::new(common::bin());
        c.args([
            "run",
            "--kernel",
            &guest("probe-pvh.elf"),
            "--cmdline",
            "exit=halt",
        ])
        .args(["--mem", "64", "--console-in", "none", "--serial", "none"])
        .args(["--socket", sock.to_str().unwrap()])
        .args(["--uid", "65534", "--gid", "65534"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    };
    // A socket directory the user could not remove the socket from: refused up front.
    let o = wait(
        probe(&closed.join("c.sock")).spawn().unwrap(),
        common::TIMEOUT,
    );
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("not writable by uid 65534"), "{o:?}");
    // A directory it can write: the dropped user's client is served, and the socket file
    // is gone at exit.
    let sock = open.join("c.sock");
    let vm = KillOnDrop::new(probe(&sock).spawn().unwrap());
    let s = connect(&sock);
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(
        ask(&s, &mut r, r#"{"id":1,"method":"status"}"#)["result"]["state"],
        "STARTED"
    );
    let out = common::output_as_nobody(&["ctl", sock.to_str().unwrap(), "kill"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(wait(vm, common::TIMEOUT).code, Some(137));
    assert!(!sock.exists(), "the socket file is removed at exit");
}
