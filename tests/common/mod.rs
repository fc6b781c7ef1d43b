//! Shared helpers for tests that boot the project's tiny guests through the real /dev/kvm.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Builds resources/test-guests once per test binary; returns the output directory.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/test-guests");
        let st = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root.join("resources/test-guests"))
            .arg(format!("OUT={}", out.display()))
            .status()
            .expect("make not found");
        assert!(st.success(), "building the test guests failed");
        out
    })
}

pub fn guest(name: &str) -> String {
    guests().join(name).to_str().unwrap().to_string()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_micro-vmm")
}

/// True when /dev/kvm is hardware-backed (VMX/SVM), false on this project's PVM machines.
pub fn hardware_kvm() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.split_whitespace().any(|w| w == "vmx" || w == "svm"))
        .unwrap_or(false)
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .collect()
    }

    /// The lines that start with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.lines().contains(&line)
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A spawned micro-vmm that is killed if the test ends (a failed assertion) before
/// [`wait`] takes it: a failing test must not leave a VM running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl From<KillOnDrop> for Child {
    fn from(mut g: KillOnDrop) -> Child {
        g.0.take().expect("taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spawns micro-vmm with `args`; `stdin` (if any) is written then closed.
pub fn spawn(args: &[&str], with_stdin: bool) -> Child {
    Command::new(bin())
        .args(args)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn micro-vmm")
}

/// Collects a child's output until it exits or `timeout` passes (then it is killed and the
/// test fails: a hang is a bug).
pub fn wait(child: impl Into<Child>, timeout: Duration) -> Outcome {
    let mut child = child.into();
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let st = child.wait().unwrap();
            let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
            panic!(
                "micro-vmm did not exit within {timeout:?} ({st})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        elapsed: start.elapsed(),
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs micro-vmm to completion with no console input.
pub fn run(args: &[&str]) -> Outcome {
    wait(spawn(args, false), TIMEOUT)
}

/// Runs micro-vmm feeding `input` on stdin.
pub fn run_with_input(args: &[&str], input: &[u8]) -> Outcome {
    let mut child = spawn(args, true);
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&data);
        // Keep stdin open a little so the guest is not racing an EOF.
        thread::sleep(Duration::from_millis(200));
    });
    let o = wait(child, TIMEOUT);
    feeder.join().unwrap();
    o
}

/// The arguments `micro-vmm run --kernel GUEST --cmdline CMDLINE --console-in none` plus
/// `extra`.
pub fn probe_args(guest_file: &str, cmdline: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--kernel", &guest(guest_file), "--cmdline", cmdline]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--console-in", "none"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `micro-vmm run` on GUEST with CMDLINE (see [`probe_args`]).
pub fn probe(guest_file: &str, cmdline: &str, extra: &[&str]) -> Outcome {
    let args = probe_args(guest_file, cmdline, extra);
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Parses "0x1f" style numbers.
pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("not hex: {s}"))
}

/// Whether this test process can run commands as another user (root, and setpriv exists).
pub fn can_switch_users() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/usr/bin/setpriv").exists()
}

/// `micro-vmm ARGS` run as `nobody` (uid and gid 65534, no supplementary groups) through
/// setpriv; see [`can_switch_users`].
pub fn output_as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(args)
        .output()
        .expect("setpriv")
}
