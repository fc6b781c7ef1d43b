//! The control socket (`--socket`, docs/api.md) and `micro-vmm ctl`, on this machine's KVM
//! with the probe guest: status, pause/resume (the console stops and goes on), stop and kill
//! with their `stopped` event to two subscribers, every bad request, clients that vanish,
//! 100 concurrent clients, stale and live sockets, the file removed on every exit, and the
//! uid check.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Outcome, guest, wait};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mvmm-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `micro-vmm run` on the probe guest with `cmdline`, serving `socket`.
fn spawn_vm(socket: &Path, cmdline: &str, extra: &[&str]) -> common::KillOnDrop {
    let mut more = vec!["--mem", "64", "--socket", socket.to_str().unwrap()];
    more.extend_from_slice(extra);
    let args = common::probe_args("probe-pvh.elf", cmdline, &more);
    common::KillOnDrop::new(common::spawn(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        false,
    ))
}

/// Connects once the VM serves the socket.
fn connect(socket: &Path) -> UnixStream {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Conn {
    r: BufReader<UnixStream>,
}

impl Conn {
    fn new(socket: &Path) -> Conn {
        Conn {
            r: BufReader::new(connect(socket)),
        }
    }
    fn send(&mut self, raw: &[u8]) {
        self.r.get_ref().write_all(raw).unwrap();
    }
    fn line(&mut self) -> Option<Value> {
        let mut l = String::new();
        if self.r.read_line(&mut l).unwrap() == 0 {
            return None;
        }
        Some(serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
    }
    fn ask(&mut self, req: Value) -> Value {
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        self.send(&line);
        self.line().expect("a response")
    }
    fn call(&mut self, method: &str) -> Value {
        self.ask(json!({"id": method, "method": method}))
    }
}

fn count_lines(path: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The event lines a subscriber gets until the server closes the connection.
fn events_until_close(c: &mut Conn) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(v) = c.line() {
        out.push(v["event"].clone());
    }
    out
}

#[test]
fn status_version_and_the_socket_file() {
    let d = Dir::new("status");
    let sock = d.path("c.sock");
    let vm = spawn_vm(&sock, "exit=halt", &["--cpus", "2"]);
    let mut c = Conn::new(&sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let v = c.call("version");
    assert_eq!(v["result"]["api_version"], 1);
    let s = c.call("status")["result"].clone();
    assert_eq!(s["state"], "STARTED", "{s}");
    assert_eq!(
        (
            &s["paused"],
            &s["cpus"],
            &s["memory_mib"],
            &s["cid"],
            &s["payload"]
        ),
        (
            &json!(false),
            &json!(2),
            &json!(64),
            &Value::Null,
            &Value::Null
        )
    );
    assert!(s["uptime_ms"].as_u64().is_some());
    // `ctl` prints the response and exits 0 for a result, 1 for an error.
    let out = Command::new(common::bin())
        .args(["ctl", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["state"], "STARTED");
    let out = Command::new(common::bin())
        .args(["ctl", sock.to_str().unwrap(), "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "unknown_method");
    let out = Command::new(common::bin())
        .args(["ctl", sock.to_str().unwrap(), "stop", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(35));
    assert_eq!(c.call("kill")["result"], json!({}));
    let o = wait(vm, common::TIMEOUT);
    assert_eq!(o.code, Some(137), "{o:?}");
    assert!(!sock.exists(), "the socket file is removed at exit");
}

#[test]
fn pause_stops_the_guest_and_resume_lets_it_go_on() {
    let d = Dir::new("pause");
    let sock = d.path("c.sock");
    let serial = d.path("serial.txt");
    let target = format!("file:{}", serial.display());
    let vm = spawn_vm(&sock, "probe=tick", &["--serial", &target]);
    let mut c = Conn::new(&sock);
    let mut sub = Conn::new(&sock);
    assert_eq!(sub.call("subscribe")["result"], json!({}));
    wait_for("ticks", || count_lines(&serial, "TICK ") >= 5);
    assert_eq!(c.call("pause")["result"], json!({}));
    assert_eq!(c.call("status")["result"]["paused"], true);
    // Output that left the vCPU before the pause may still be on its way to the file.
    std::thread::sleep(Duration::from_millis(100));
    let frozen = count_lines(&serial, "TICK ");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        count_lines(&serial, "TICK "),
        frozen,
        "the guest ran while paused"
    );
    // Idempotent, and the event is sent once.
    assert_eq!(c.call("pause")["result"], json!({}));
    assert_eq!(c.call("resume")["result"], json!({}));
    assert_eq!(c.call("resume")["result"], json!({}));
    wait_for("ticks after resume", || {
        count_lines(&serial, "TICK ") >= frozen + 5
    });
    assert_eq!(c.call("status")["result"]["paused"], false);
    // A stop while paused works (a `run` VM has no agent: killed at once).
    assert_eq!(c.call("pause")["result"], json!({}));
    let v = c.ask(json!({"id": 1, "method": "stop", "params": {"timeout_ms": 5000}}));
    assert_eq!(v["result"], json!({"graceful": false}));
    let o = wait(vm, common::TIMEOUT);
    assert_eq!(o.code, Some(137), "{o:?}");
    assert_eq!(
        events_until_close(&mut sub),
        vec![
            json!({"type": "paused"}),
            json!({"type": "resumed"}),
            json!({"type": "paused"}),
            json!({"state": "DEAD", "type": "state"}),
            json!({"type": "stopped", "reason": "KILLED", "exit_code": 137}),
        ]
    );
}

#[test]
fn kill_and_a_guest_power_off_reach_every_subscriber_once() {
    let d = Dir::new("kill");
    let sock = d.path("c.sock");
    let vm = spawn_vm(&sock, "exit=halt", &[]);
    let mut subs: Vec<Conn> = (0..2).map(|_| Conn::new(&sock)).collect();
    for s in &mut subs {
        assert_eq!(s.call("subscribe")["result"], json!({}));
    }
    // `ctl subscribe` too: prints the response and every event until the VM stops.
    let ctl_sub = Command::new(common::bin())
        .args(["ctl", sock.to_str().unwrap(), "subscribe"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Conn::new(&sock);
    assert_eq!(c.call("kill")["result"], json!({}));
    let o = wait(vm, common::TIMEOUT);
    assert_eq!(o.code, Some(137), "{o:?}");
    let want = vec![
        json!({"state": "DEAD", "type": "state"}),
        json!({"type": "stopped", "reason": "KILLED", "exit_code": 137}),
    ];
    for s in &mut subs {
        assert_eq!(events_until_close(s), want);
    }
    let out = ctl_sub.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().last().unwrap().contains("\"stopped\""));

    // The guest's own power-off (the echo probe quits on "quit"): SHUTDOWN, exit code 0.
    let g = guest("probe-pvh.elf");
    let mut vm = common::spawn(
        &[
            "run",
            "--kernel",
            &g,
            "--cmdline",
            "probe=echo exit=poweroff",
            "--mem",
            "64",
            "--socket",
            sock.to_str().unwrap(),
        ],
        true,
    );
    let mut s = Conn::new(&sock);
    assert_eq!(s.call("subscribe")["result"], json!({}));
    let mut stdin = vm.stdin.take().unwrap();
    stdin.write_all(b"quit\n").unwrap();
    let o = wait(vm, common::TIMEOUT);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        events_until_close(&mut s),
        vec![
            json!({"state": "DEAD", "type": "state"}),
            json!({"type": "stopped", "reason": "SHUTDOWN", "exit_code": 0}),
        ]
    );
    drop(stdin);
}

#[test]
fn every_bad_request_gets_its_error_and_the_connection_goes_on() {
    let d = Dir::new("bad");
    let sock = d.path("c.sock");
    let vm = spawn_vm(&sock, "exit=halt", &[]);
    let mut c = Conn::new(&sock);
    let mut expect = |raw: &[u8], code: &str, id: Value| {
        c.send(raw);
        let v = c.line().unwrap();
        assert_eq!(
            v["error"]["code"],
            code,
            "{:?}: {v}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(v["id"], id, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    expect(b"garbage\n", "parse_error", Value::Null);
    expect(b"[1,2,3]\n", "parse_error", Value::Null);
    expect(b"\"status\"\n", "parse_error", Value::Null);
    expect(b"\xff\xfe\n", "parse_error", Value::Null);
    let mut huge = vec![b'x'; 1 << 20];
    huge.push(b'\n');
    expect(&huge, "line_too_long", Value::Null);
    expect(
        b"{\"id\":1,\"method\":\"reboot\"}\n",
        "unknown_method",
        json!(1),
    );
    expect(b"{\"method\":\"status\"}\n", "bad_request", Value::Null);
    expect(
        b"{\"id\":2,\"method\":\"stop\",\"params\":{\"timeout_ms\":\"x\"}}\n",
        "bad_request",
        json!(2),
    );
    expect(
        b"{\"id\":3,\"method\":\"status\",\"params\":{\"verbose\":true}}\n",
        "bad_request",
        json!(3),
    );
    expect(
        b"{\"id\":4,\"method\":\"connect-vsock\",\"params\":{\"port\":80}}\n",
        "bad_request",
        json!(4),
    );
    expect(
        b"{\"id\":5,\"method\":\"connect-vsock\",\"params\":{}}\n",
        "bad_request",
        json!(5),
    );
    expect(
        b"{\"id\":6,\"method\":\"connect-vsock\",\"params\":{\"port\":5555}}\n",
        "unsupported",
        json!(6),
    );
    // Still served, and the VM still runs.
    assert_eq!(c.call("status")["result"]["state"], "STARTED");
    // A client that vanishes mid-line, or right after a request, costs nothing.
    {
        let s = connect(&sock);
        (&s).write_all(b"{\"id\":1,\"meth").unwrap();
    }
    {
        let s = connect(&sock);
        (&s).write_all(b"{\"id\":1,\"method\":\"pause\"}\n")
            .unwrap();
    }
    {
        let s = connect(&sock);
        (&s).write_all(&vec![b'{'; 300 << 10]).unwrap();
    }
    let v = c.call("status")["result"].clone();
    assert_eq!(v["state"], "STARTED");
    assert_eq!(c.call("resume")["result"], json!({}));
    c.call("kill");
    assert_eq!(wait(vm, common::TIMEOUT).code, Some(137));
}

#[test]
fn a_hundred_concurrent_clients_are_all_answered() {
    let d = Dir::new("many");
    let sock = d.path("c.sock");
    let vm = spawn_vm(&sock, "exit=halt", &[]);
    drop(connect(&sock));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(&sock);
                let v = c.ask(json!({"id": i, "method": "status"}));
                assert_eq!(v["id"], i);
                assert_eq!(v["result"]["state"], "STARTED");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = Conn::new(&sock);
    assert_eq!(c.call("status")["result"]["state"], "STARTED");
    c.call("kill");
    assert_eq!(wait(vm, common::TIMEOUT).code, Some(137));
}

#[test]
fn stale_socket_replaced_live_one_refused_and_removed_on_sigterm() {
    let d = Dir::new("stale");
    let sock = d.path("c.sock");
    drop(UnixListener::bind(&sock).unwrap()); // stale: nobody listens
    let vm = spawn_vm(&sock, "exit=halt", &[]);
    let mut c = Conn::new(&sock);
    assert_eq!(c.call("status")["result"]["state"], "STARTED");
    // A second micro-vmm on the live socket refuses to start, before any VM.
    let o = wait(spawn_vm(&sock, "exit=halt", &[]), common::TIMEOUT);
    assert_eq!(o.code, Some(35), "{o:?}");
    assert!(o.stderr.contains("already in use"), "{o:?}");
    assert_eq!(c.call("status")["result"]["state"], "STARTED");
    // SIGTERM: a clean stop, the file goes.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(vm.id() as i32, libc::SIGTERM) };
    let o: Outcome = wait(vm, common::TIMEOUT);
    assert_eq!(o.code, Some(143), "{o:?}");
    assert!(!sock.exists());
    // Not a socket: refused and left alone.
    std::fs::write(&sock, b"data").unwrap();
    let o = wait(spawn_vm(&sock, "exit=halt", &[]), common::TIMEOUT);
    assert_eq!(o.code, Some(35), "{o:?}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"data");
    // A guest that powers off by itself removes it too.
    std::fs::remove_file(&sock).unwrap();
    let o = wait(spawn_vm(&sock, "exit=poweroff", &[]), common::TIMEOUT);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(!sock.exists());
}

#[test]
fn a_client_with_another_uid_is_refused() {
    if !common::can_switch_users() {
        eprintln!("skipped: needs root and setpriv (the check is unit-tested in unix_socket)");
        return;
    }
    let d = Dir::new("uid");
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.path("c.sock");
    let vm = spawn_vm(&sock, "exit=halt", &[]);
    let mut c = Conn::new(&sock);
    // Let `nobody` reach the socket file: only the uid check stands in the way.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = common::output_as_nobody(&["ctl", sock.to_str().unwrap(), "kill"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Closed at once: depending on timing the client sees EOF, a reset or a broken pipe.
    assert!(
        ["without answering", "Connection reset", "Broken pipe"]
            .iter()
            .any(|m| err.contains(m)),
        "{err}"
    );
    assert_eq!(c.call("status")["result"]["state"], "STARTED", "not killed");
    c.call("kill");
    assert_eq!(wait(vm, common::TIMEOUT).code, Some(137));
}

#[test]
fn connect_vsock_to_a_guest_without_a_vsock_driver_fails_cleanly() {
    let d = Dir::new("vsock");
    let sock = d.path("c.sock");
    let uds = d.path("v.sock");
    let vsock = format!("cid=5,uds={}", uds.display());
    let vm = spawn_vm(&sock, "exit=halt", &["--vsock", &vsock]);
    let mut c = Conn::new(&sock);
    assert_eq!(c.call("status")["result"]["cid"], 5);
    let v = c.ask(json!({"id": 1, "method": "connect-vsock", "params": {"port": 5555}}));
    assert_eq!(v["error"]["code"], "failed", "{v}");
    // ctl: the response on stderr, exit 1.
    let out = Command::new(common::bin())
        .args(["ctl", sock.to_str().unwrap(), "connect-vsock", "5555"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"failed\""));
    c.call("kill");
    assert_eq!(wait(vm, common::TIMEOUT).code, Some(137));
}

#[test]
fn dump_over_the_socket_and_on_sigusr1_shows_every_vcpu_and_the_irqchip() {
    let d = Dir::new("dump");
    let sock = d.path("c.sock");
    let serial = d.path("serial.txt");
    let target = format!("file:{}", serial.display());
    let vm = spawn_vm(&sock, "probe=tick", &["--cpus", "2", "--serial", &target]);
    let mut c = Conn::new(&sock);
    wait_for("ticks", || count_lines(&serial, "TICK ") >= 2);
    let v = c.call("dump");
    let text = v["result"]["dump"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    // vCPU 0 runs the tick loop; vCPU 1 was never started (it waits for INIT/SIPI).
    for want in [
        "vcpu0: mp_state RUNNABLE",
        "vcpu1: mp_state UNINITIALIZED",
        "vcpu0: rip 0x",
        "vcpu0: events: exception injected=0",
        "vcpu1: lapic id 1 ",
        "ioapic: id ",
        "pic master: irr ",
        "port 0x3f8: COM1: ier ",
    ] {
        assert!(text.contains(want), "no {want:?} in the dump:\n{text}");
    }
    assert!(!text.contains("no answer"), "{text}");
    // `ctl dump` prints the text itself.
    let o = common::run(&["ctl", sock.to_str().unwrap(), "dump"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("vcpu1: mp_state UNINITIALIZED"), "{o:?}");
    // SIGUSR1: the same dump on stderr (the third one), and the VM goes on.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(vm.id() as i32, libc::SIGUSR1) };
    let before = count_lines(&serial, "TICK ");
    wait_for("ticks after the dump", || {
        count_lines(&serial, "TICK ") >= before + 3
    });
    assert_eq!(c.call("status")["result"]["state"], "STARTED");
    let v = c.ask(json!({"id": 1, "method": "stop", "params": {"timeout_ms": 0}}));
    assert!(v.get("result").is_some(), "{v}");
    let o = wait(vm, common::TIMEOUT);
    assert!(
        o.stderr.contains("micro-vmm state dump #3")
            && o.stderr.contains("vcpu1: mp_state UNINITIALIZED"),
        "{o:?}"
    );
}
