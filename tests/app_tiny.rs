//! `micro-vmm --app` on this machine's KVM with the probe guest standing in for the guest OS
//! (`--os-config`): the host side of an app run — inputs created, the payload disk built, the
//! stop reason told from the failure string, the hangup watchdog, SIGTERM, exit codes, and
//! the private directory removed on every path. (The real guest runs in tests/e2e/app.py.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Outcome, guest, wait};

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("mvmm-app-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An APK holding `assets/vm_config.json` = `config`.
    fn apk(&self, config: &str) -> PathBuf {
        let path = self.path("app.apk");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("AndroidManifest.xml", opts).unwrap();
        z.write_all(b"<manifest/>").unwrap();
        z.start_file("assets/vm_config.json", opts).unwrap();
        z.write_all(config.as_bytes()).unwrap();
        z.start_file("bin/payload", opts).unwrap();
        z.write_all(&[0x5a; 10000]).unwrap();
        z.finish().unwrap();
        path
    }

    /// A vmconfig booting the probe guest with `params`.
    fn os_config(&self, params: &str) -> PathBuf {
        let path = self.path("os.json");
        let json = serde_json::json!({
            "kernel": guest("probe-pvh.elf"),
            "params": params,
            "memory_mib": 64,
            "platform_version": "~1.0",
        });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    fn command(&self, params: &str, extra: &[&str]) -> Command {
        let apk = self.apk(GOOD_CONFIG);
        let mut c = Command::new(common::bin());
        c.arg("--app")
            .arg(&apk)
            .arg(self.path("app.idsig"))
            .arg("assets/vm_config.json")
            .arg("--os-config")
            .arg(self.os_config(params))
            .args(extra)
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, params: &str, extra: &[&str]) -> Outcome {
        wait(
            self.command(params, extra).spawn().unwrap(),
            common::TIMEOUT,
        )
    }

    /// Nothing left in the private-directory parent.
    fn assert_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GOOD_CONFIG: &str =
    r#"{"task": {"type": "executable", "command": "/mnt/apk/bin/payload"}, "unknown": 1}"#;

fn stderr_has(o: &Outcome, line: &str) -> bool {
    o.stderr.lines().any(|l| l == line)
}

#[test]
fn failure_string_on_the_log_port_is_the_stop_reason() {
    let env = Env::new("fail");
    let log = env.path("ttyS1.log");
    let log_flag = format!("file:{}", log.display());
    let o = env.run("probe=fail", &["--log", &log_flag]);
    assert!(o.stdout.contains("FAIL sent"), "{}", o.stdout);
    assert!(
        stderr_has(
            &o,
            "micro-vmm: VM stopped: MICRODROID_INVALID_PAYLOAD_CONFIG"
        ),
        "{}",
        o.stderr
    );
    assert_eq!(o.code, Some(214), "{}", o.stderr);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "MICRODROID_INVALID_PAYLOAD_CONFIG"
    );
    // The inputs Android's host creates: the idsig of the APK.
    let idsig = std::fs::read(env.path("app.idsig")).unwrap();
    assert!(
        idsig.len() > 45 && idsig[..4] == [2, 0, 0, 0],
        "idsig not written"
    );
    env.assert_clean();
}

#[test]
fn a_plain_power_off_without_the_payload_finishing_is_shutdown() {
    let env = Env::new("off");
    let inst = env.path("instance.img");
    let storage = env.path("storage.img");
    let o = env.run(
        "",
        &[
            "--instance",
            inst.to_str().unwrap(),
            "--storage",
            storage.to_str().unwrap(),
            "--storage-size",
            "64K",
        ],
    );
    assert_eq!(o.code, Some(203), "{}", o.stderr);
    assert!(
        stderr_has(&o, "micro-vmm: VM stopped: SHUTDOWN"),
        "{}",
        o.stderr
    );
    let head = std::fs::read(&inst).unwrap();
    assert_eq!(head.len(), 10 << 20);
    assert_eq!(&head[..19], b"Android-VM-instance");
    assert_eq!(&head[19..21], &[1, 0]);
    let s = std::fs::read(&storage).unwrap();
    assert_eq!((s.len(), &s[..19]), (64 << 10, &b"UNFORMATTED-STORAGE"[..]));
    env.assert_clean();
}

#[test]
fn a_payload_that_never_starts_is_a_hangup() {
    let env = Env::new("hang");
    let o = env.run("exit=halt", &["--hangup-timeout", "1"]);
    assert_eq!(o.code, Some(216), "{}", o.stderr);
    assert!(
        stderr_has(&o, "micro-vmm: VM stopped: HANGUP"),
        "{}",
        o.stderr
    );
    assert!(o.elapsed < Duration::from_secs(20), "{:?}", o.elapsed);
    env.assert_clean();
}

#[test]
fn sigterm_is_killed_and_cleans_up() {
    let env = Env::new("term");
    let child = common::KillOnDrop::new(env.command("exit=halt", &[]).spawn().unwrap());
    let pid = child.id() as i32;
    // Wait until the VM runs (the probe prints PROBE-UP), then SIGTERM.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let o = wait(child, common::TIMEOUT);
    assert_eq!(o.code, Some(201), "{}", o.stderr);
    assert!(
        stderr_has(&o, "micro-vmm: VM stopped: KILLED"),
        "{}",
        o.stderr
    );
    env.assert_clean();
}

#[test]
fn bad_inputs_stop_before_any_vm() {
    let env = Env::new("bad");
    let os = env.os_config("");
    let run = |apk: &Path, config_path: &str, extra: &[&str]| {
        let mut c = Command::new(common::bin());
        c.arg("--app")
            .arg(apk)
            .arg(env.path("app.idsig"))
            .arg(config_path)
            .arg("--os-config")
            .arg(&os)
            .args(extra)
            .env("TMPDIR", env.path("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait(c.spawn().unwrap(), common::TIMEOUT)
    };
    // A config with a wrong type: Android's host refuses it before starting the VM.
    let apk = env.apk(r#"{"task": {"type": "executable", "command": 5}}"#);
    let o = run(&apk, "assets/vm_config.json", &[]);
    assert_eq!(o.code, Some(214), "{}", o.stderr);
    assert!(o.stderr.contains("error PAYLOAD_INVALID_CONFIG") && o.stderr.contains("task.command"));
    assert!(!o.stdout.contains("PROBE-UP"), "a VM ran");
    // No such config; a directory as the config; a missing APK; a 0-byte APK; an APEX
    // without --apex-dir; an extra APK without its idsig.
    let apk = env.apk(GOOD_CONFIG);
    for (path, want) in [
        ("assets/nope.json", "assets/nope.json"),
        ("assets", "assets"),
    ] {
        let o = run(&apk, path, &[]);
        assert_eq!(o.code, Some(214), "{path}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{}", o.stderr);
    }
    let o = run(&env.path("missing.apk"), "assets/vm_config.json", &[]);
    assert_eq!(o.code, Some(35), "{}", o.stderr);
    assert!(o.stderr.contains("missing.apk"), "{}", o.stderr);
    let empty = env.path("empty.apk");
    std::fs::write(&empty, b"").unwrap();
    let o = run(&empty, "assets/vm_config.json", &[]);
    assert_eq!(o.code, Some(35), "{}", o.stderr);
    assert!(o.stderr.contains("empty.apk"), "{}", o.stderr);
    let apk = env.apk(
        r#"{"task": {"type": "executable", "command": "/x"}, "apexes": [{"name": "com.android.foo"}]}"#,
    );
    let o = run(&apk, "assets/vm_config.json", &[]);
    assert_eq!(o.code, Some(35), "{}", o.stderr);
    assert!(o.stderr.contains("com.android.foo") && o.stderr.contains("--apex-dir"));
    let apk = env.apk(
        r#"{"task": {"type": "executable", "command": "/x"}, "extra_apks": [{"path": "/x.apk"}]}"#,
    );
    let o = run(&apk, "assets/vm_config.json", &[]);
    assert_eq!(o.code, Some(35), "{}", o.stderr);
    assert!(o.stderr.contains("extra"), "{}", o.stderr);
    env.assert_clean();
}

/// Reads one JSON line.
fn json_line(r: &mut impl std::io::BufRead) -> serde_json::Value {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
}

#[test]
fn control_socket_drives_an_app_through_its_agent() {
    use serde_json::json;
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;

    let env = Env::new("ctl");
    let sock = env.path("c.sock");
    let child = env
        .command("exit=halt", &["--socket", sock.to_str().unwrap()])
        .spawn()
        .unwrap();
    let connect = |p: &Path| {
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(s) = UnixStream::connect(p) {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{}", p.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let ctl = connect(&sock);
    let mut ctl_r = BufReader::new(ctl.try_clone().unwrap());
    let mut ask = |req: serde_json::Value| {
        (&ctl).write_all(format!("{req}\n").as_bytes()).unwrap();
        json_line(&mut ctl_r)
    };
    let sub = connect(&sock);
    (&sub)
        .write_all(b"{\"id\":0,\"method\":\"subscribe\"}\n")
        .unwrap();
    let mut sub_r = BufReader::new(sub);
    assert_eq!(json_line(&mut sub_r)["result"], json!({}));
    let s = ask(json!({"id": 1, "method": "status"}))["result"].clone();
    assert_eq!(
        (&s["state"], &s["cid"]),
        (&json!("STARTING"), &json!(3)),
        "{s}"
    );
    assert_eq!(
        s["payload"],
        json!({"started": false, "ready": false, "finished": null, "error": null})
    );
    // The fake agent: the lifecycle socket in the private directory.
    let work = std::fs::read_dir(env.path("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("micro-vmm-")
        })
        .expect("the private directory");
    let agent = connect(&work.join("vsock.sock_5000"));
    (&agent)
        .write_all(b"{\"event\":\"hello\",\"version\":1}\n{\"event\":\"started\"}\n")
        .unwrap();
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "payload_started"})
    );
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "state", "state": "STARTED"})
    );
    assert_eq!(
        ask(json!({"id": 2, "method": "status"}))["result"]["state"],
        "STARTED"
    );
    // stop: the agent is asked; it reports the payload's end but the guest (the probe) does
    // not power off, so the deadline kills the VM.
    let v = ask(json!({"id": 3, "method": "stop", "params": {"timeout_ms": 500}}));
    assert_eq!(v["result"], json!({"graceful": true}));
    let mut agent_r = BufReader::new(agent.try_clone().unwrap());
    assert_eq!(json_line(&mut agent_r), json!({"request": "shutdown"}));
    (&agent)
        .write_all(b"{\"event\":\"finished\",\"exit_code\":7}\n")
        .unwrap();
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "payload_finished", "exit_code": 7})
    );
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "state", "state": "FINISHED"})
    );
    let o = wait(child, common::TIMEOUT);
    assert_eq!(o.code, Some(7), "{o:?}");
    assert!(
        stderr_has(&o, "micro-vmm: VM stopped: KILLED"),
        "{}",
        o.stderr
    );
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "state", "state": "DEAD"})
    );
    assert_eq!(
        json_line(&mut sub_r)["event"],
        json!({"type": "stopped", "reason": "KILLED", "exit_code": 7})
    );
    assert!(!sock.exists());
    env.assert_clean();
}
