//! `micro-vmm vm ...` on this machine's KVM with the probe guest standing in for the guest
//! OS (the VM config's `os_config`): create, run (detached and in the foreground), status,
//! stop, the recorded stop reasons (KILLED after a stop or a `kill -9`, the guest's failure
//! string, SHUTDOWN), one run at a time, delete and tombstones, export and import.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, guest, wait};

struct Env {
    dir: PathBuf,
}

const PAYLOAD_CONFIG: &str =
    r#"{"task": {"type": "executable", "command": "/mnt/apk/bin/payload"}}"#;

impl Env {
    fn new(tag: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("mvmm-mgr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// An APK with a valid payload config, the probe guest as the OS, and a VM config.
    fn config(&self, params: &str, storage: u64) -> PathBuf {
        let apk = self.path("app.apk");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&apk).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("assets/vm_config.json", opts).unwrap();
        z.write_all(PAYLOAD_CONFIG.as_bytes()).unwrap();
        z.start_file("bin/payload", opts).unwrap();
        z.write_all(&[0x5a; 5000]).unwrap();
        z.finish().unwrap();
        let os = self.path(&format!("os-{}.json", params.replace(['=', ' '], "_")));
        let os_json = serde_json::json!({
            "kernel": guest("probe-pvh.elf"),
            "params": params,
            "memory_mib": 64,
            "platform_version": "~1.0",
        });
        std::fs::write(&os, os_json.to_string()).unwrap();
        let cfg = self.path("vm.json");
        let json = serde_json::json!({
            "apk": apk,
            "config_path": "assets/vm_config.json",
            "memory_mib": 64,
            "encrypted_storage_bytes": storage,
            "os_config": os,
        });
        std::fs::write(&cfg, json.to_string()).unwrap();
        cfg
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.arg("vm")
            .args(args)
            .env("MICRO_VMM_HOME", self.home())
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn vm(&self, args: &[&str]) -> Outcome {
        wait(self.command(args).spawn().unwrap(), common::TIMEOUT)
    }

    /// Runs and expects success.
    fn ok(&self, args: &[&str]) -> Outcome {
        let o = self.vm(args);
        assert_eq!(o.code, Some(0), "vm {args:?}: {o:?}");
        o
    }

    fn status(&self, name: &str) -> String {
        self.ok(&["status", name]).stdout.trim().to_string()
    }

    fn vm_file(&self, name: &str, file: &str) -> PathBuf {
        self.home().join("vm").join(name).join(file)
    }

    fn last_stop(&self, name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.vm_file(name, "last_stop.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Waits until the console shows the probe is up.
    fn wait_console(&self, name: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let path = self.vm_file(name, "console.log");
        while Instant::now() < deadline {
            if std::fs::read_to_string(&path).is_ok_and(|c| c.contains(text)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{text:?} never appeared in {}", path.display());
    }

    fn wait_status(&self, name: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.status(name) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{name} never became {want}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave no VM running behind a failed assertion.
        if let Ok(entries) = std::fs::read_dir(self.home().join("vm")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let _ = self.command(&["stop", &name, "--timeout", "1"]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn detached_run_status_stop_and_delete() {
    let env = Env::new("life");
    let cfg = env.config("exit=halt", 65536);
    env.ok(&["create", "a", "--config", cfg.to_str().unwrap()]);
    assert_eq!(env.status("a"), "stopped");
    let o = env.vm(&["create", "a", "--config", cfg.to_str().unwrap()]);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("already exists"), "{o:?}");

    let o = env.ok(&["run", "a", "--detach"]);
    assert!(o.stderr.contains("VM a started"), "{o:?}");
    assert_eq!(env.status("a"), "running");
    env.wait_console("a", "PROBE-UP");
    assert_eq!(env.ok(&["list"]).stdout, "a\trunning\n");

    // One run at a time; a running VM cannot be deleted, exported or reconfigured.
    let o = env.vm(&["run", "a", "--detach"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("is running"), "{o:?}");
    let o = env.vm(&["run", "a"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("is running"),
        "{o:?}"
    );
    let o = env.vm(&["delete", "a"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("is running"),
        "{o:?}"
    );
    let out = env.path("desc");
    let o = env.vm(&["export", "a", out.to_str().unwrap()]);
    assert!(
        o.code == Some(1) && o.stderr.contains("is running"),
        "{o:?}"
    );
    assert!(!out.exists());

    let t = Instant::now();
    let o = env.ok(&["stop", "a"]);
    assert_eq!(o.stdout.trim(), "KILLED", "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(env.status("a"), "stopped");
    let last = env.last_stop("a");
    assert_eq!(last["reason"], "KILLED", "{last}");
    // The monitor subscribed to the control socket and normally gets the `stopped` event;
    // the server can still close a subscription after `state DEAD` without it (its worker
    // may see the shutdown flag before fanning out the last event), and then the exit
    // status tells the same reason.
    assert!(
        last["source"] == "control_socket" || last["source"] == "exit_status",
        "{last}"
    );
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "a"]).stdout).unwrap();
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["last_stop"]["reason"], "KILLED");
    assert_eq!(info["config"]["encrypted_storage_bytes"], 65536);
    let files: Vec<&str> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for f in [
        "config.json",
        "console.log",
        "idsig",
        "instance.img",
        "instance_id",
        "storage.img",
    ] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    let o = env.vm(&["stop", "a"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("not running"),
        "{o:?}"
    );

    env.ok(&["delete", "a"]);
    assert_eq!(env.status("a"), "deleted");
    assert_eq!(env.ok(&["list"]).stdout, "");
    let o = env.vm(&["run", "a"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("was deleted"),
        "{o:?}"
    );
    env.ok(&["create", "a", "--config", cfg.to_str().unwrap()]);
    assert_eq!(env.status("a"), "stopped");
}

#[test]
fn kill_9_of_the_vmm_is_killed() {
    let env = Env::new("kill9");
    let cfg = env.config("exit=halt", 0);
    env.ok(&["create", "k", "--config", cfg.to_str().unwrap()]);
    env.ok(&["run", "k", "--detach"]);
    env.wait_console("k", "PROBE-UP");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.vm_file("k", "run.json")).unwrap())
            .unwrap();
    let pid = run["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) of the micro-vmm process the manager started for this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    env.wait_status("k", "stopped");
    let last = env.last_stop("k");
    assert_eq!(last["reason"], "KILLED", "{last}");
    assert_eq!(last["signal"], 9, "{last}");
    assert_eq!(last["source"], "exit_status", "{last}");
    assert!(last["exit_code"].is_null(), "{last}");
}

#[test]
fn the_guest_failure_string_is_the_reason() {
    let env = Env::new("fail");
    let cfg = env.config("probe=fail", 0);
    env.ok(&["create", "f", "--config", cfg.to_str().unwrap()]);
    // In the foreground: the console on stdout, micro-vmm's exit code.
    let o = env.vm(&["run", "f"]);
    assert_eq!(o.code, Some(214), "{o:?}");
    assert!(o.stdout.contains("FAIL sent"), "{o:?}");
    assert!(
        o.stderr
            .contains("VM stopped: MICRODROID_INVALID_PAYLOAD_CONFIG"),
        "{o:?}"
    );
    let last = env.last_stop("f");
    assert_eq!(
        last["reason"], "MICRODROID_INVALID_PAYLOAD_CONFIG",
        "{last}"
    );
    assert_eq!(last["exit_code"], 214, "{last}");
    assert_eq!(env.status("f"), "stopped");
}

#[test]
fn export_then_import_under_a_new_name_runs() {
    let env = Env::new("export");
    let cfg = env.config("", 8192);
    env.ok(&["create", "src", "--config", cfg.to_str().unwrap()]);
    let out = env.path("desc");
    env.ok(&["export", "src", out.to_str().unwrap()]);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["config.json", "instance.img", "instance_id", "storage.img"]
    );
    // The config names the APK outside the descriptor directory: refused unless trusted.
    let o = env.vm(&["import", "copy", out.to_str().unwrap()]);
    assert!(
        o.code == Some(35) && o.stderr.contains("--trust-paths"),
        "{o:?}"
    );
    let o = env.vm(&["import", "src", out.to_str().unwrap(), "--trust-paths"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("already exists"),
        "{o:?}"
    );
    env.ok(&["import", "copy", out.to_str().unwrap(), "--trust-paths"]);
    assert_eq!(
        std::fs::read(env.vm_file("src", "instance_id")).unwrap(),
        std::fs::read(env.vm_file("copy", "instance_id")).unwrap()
    );
    // The probe powers off at once: SHUTDOWN without the payload finishing.
    let o = env.vm(&["run", "copy"]);
    assert_eq!(o.code, Some(203), "{o:?}");
    assert!(o.stdout.contains("PROBE-UP"), "{o:?}");
    assert_eq!(env.last_stop("copy")["reason"], "SHUTDOWN");
    // The console of a stopped VM: its last run's, then the command ends.
    let o = env.ok(&["console", "copy"]);
    assert!(o.stdout.contains("PROBE-UP"), "{o:?}");
    assert!(
        env.vm_file("copy", "idsig").exists(),
        "idsig not regenerated"
    );
    assert!(!env.vm_file("src", "idsig").exists());
}

#[test]
fn bad_names_and_configs_create_nothing() {
    let env = Env::new("bad");
    let cfg = env.config("", 0);
    let long = "x".repeat(65);
    for name in ["", ".", "..", "a/b", long.as_str()] {
        let o = env.vm(&["create", name, "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.code, Some(35), "{name:?}: {o:?}");
        assert!(o.stderr.contains("invalid VM name"), "{o:?}");
    }
    let bad = env.path("bad.json");
    for (json, want) in [
        (
            r#"{"apk": "/nonexistent.apk", "config_path": "c"}"#,
            "nonexistent.apk",
        ),
        (
            r#"{"apk": "/x.apk", "payload_binary_name": "libp.so"}"#,
            "payload_binary_name",
        ),
        (
            r#"{"apk": "/x.apk", "config_path": "c", "cpus": 0}"#,
            "cpus",
        ),
    ] {
        std::fs::write(&bad, json).unwrap();
        let o = env.vm(&["create", "b", "--config", bad.to_str().unwrap()]);
        assert_eq!(o.code, Some(35), "{json}: {o:?}");
        assert!(
            o.stderr.contains(want) && o.stderr.contains("bad.json"),
            "{o:?}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(env.home().join("vm"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let o = env.vm(&["status", "nope"]);
    assert!(
        o.code == Some(1) && o.stderr.contains("no VM named"),
        "{o:?}"
    );
}
