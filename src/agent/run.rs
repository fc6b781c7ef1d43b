//! The agent's sequence after connecting (docs/lifecycle.md steps 3 to 9) and its event loop:
//! `hello`, the payload steps, `started`, the task with the ready socket and host requests,
//! `finished` (or `error`), then delivery. The caller writes the failure string and powers
//! off.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::host::{HostChannel, Link};
use super::system::{System, failure_string};
use super::task::{self, TaskSpec};
use super::{AgentConfig, AgentError, prepare, ready};
use crate::lifecycle::protocol::GuestEvent;
use crate::lifecycle::{ErrorCode, PROTOCOL_VERSION};

/// How long a payload's `ready` waits for the agent's loop to take it.
const READY_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What reaches the event loop from the other threads.
#[derive(Debug)]
pub enum Signal {
    /// The task ended with this exit code.
    TaskExited(i32),
    /// A payload wrote `ready`; answer on the sender once the host has been told.
    Ready(Sender<()>),
    /// The host sent `{"request":"shutdown"}`.
    ShutdownRequested,
    /// The host closed the connection (or reading from it failed).
    HostClosed,
}

/// How the payload's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task ran and exited with this code (`finished` was sent).
    Finished(i32),
    /// The payload could not run (`error` was sent).
    Failed { code: ErrorCode, message: String },
    /// The host asked for a shutdown before the task started; it never ran.
    Cancelled,
}

impl Outcome {
    /// The failure string to write to ttyS1 before powering off, if any.
    pub fn failure_string(&self) -> Option<String> {
        match self {
            Outcome::Failed { code, message } => Some(failure_string(*code, message)),
            _ => None,
        }
    }
}

/// Runs the payload over an open connection to the host, from `hello` to delivery.
/// Never panics on bad input; every error ends as [`Outcome::Failed`].
pub fn run<L: Link>(cfg: &AgentConfig, sys: &dyn System, link: L) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let mut host = HostChannel::new(link);
    host.send(&GuestEvent::Hello {
        version: PROTOCOL_VERSION,
    });
    if let Err(e) = host.start_reader(tx.clone()) {
        crate::agent_log!("cannot start reading from the host: {e}");
    }
    let mut host_closed = false;
    let outcome = match prepare::prepare(cfg, sys) {
        Err(e) => fail(&mut host, &e),
        Ok(spec) => run_task(cfg, &mut host, &spec, &tx, &rx, &mut host_closed),
    };
    host.finish();
    if !host_closed {
        wait_host_closed(&rx, cfg.delivery_wait);
    }
    crate::agent_debug!("done: {outcome:?}");
    outcome
}

/// Reports an error to the host.
fn fail<L: Link>(host: &mut HostChannel<L>, e: &AgentError) -> Outcome {
    let code = e.error_code();
    let message = e.to_string();
    crate::agent_log!("error {}: {message}", code.name());
    host.send(&GuestEvent::Error {
        code,
        message: message.clone(),
    });
    Outcome::Failed { code, message }
}

/// Waits (at most `timeout`) for the host to close the connection after the last event.
fn wait_host_closed(rx: &Receiver<Signal>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Signal::HostClosed) => return,
            // A payload's late `ready` gets no answer: its sender is dropped here.
            Ok(_) => {}
            Err(_) => {
                crate::agent_log!("the host did not close the connection within {timeout:?}");
                return;
            }
        }
    }
}

/// Step 9: `started`, the task, `ready`, `finished`.
fn run_task<L: Link>(
    cfg: &AgentConfig,
    host: &mut HostChannel<L>,
    spec: &TaskSpec,
    tx: &Sender<Signal>,
    rx: &Receiver<Signal>,
    host_closed: &mut bool,
) -> Outcome {
    // A shutdown asked for while preparing: the task never starts.
    while let Ok(signal) = rx.try_recv() {
        match signal {
            Signal::ShutdownRequested => return Outcome::Cancelled,
            Signal::HostClosed => *host_closed = true,
            _ => {}
        }
    }
    let ready_tx = tx.clone();
    let served = ready::serve(&cfg.payload_service, move || {
        let (reply_tx, reply_rx) = mpsc::channel();
        ready_tx.send(Signal::Ready(reply_tx)).is_ok()
            && reply_rx.recv_timeout(READY_REPLY_TIMEOUT).is_ok()
    });
    if let Err(e) = served {
        return fail(host, &e);
    }

    host.send(&GuestEvent::Started);
    let pid = match task::spawn(spec) {
        Ok(pid) => pid,
        Err(e) => return fail(host, &e),
    };
    crate::agent_debug!("task {:?} started, pid {pid}", spec.command);
    if let Err(e) = start_waiter(pid, cfg.reap_all, tx.clone()) {
        // Without a waiter the exit cannot be seen: stop the task rather than hang.
        let _ = task::kill_group(pid, libc::SIGKILL);
        return fail(host, &e);
    }

    let mut ready_sent = false;
    let mut kill_at: Option<Instant> = None;
    let code = loop {
        let signal = match kill_at {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match signal {
            Ok(Signal::TaskExited(code)) => break code,
            Ok(Signal::Ready(reply)) => {
                if !ready_sent {
                    host.send(&GuestEvent::Ready);
                    ready_sent = true;
                }
                let _ = reply.send(());
            }
            Ok(Signal::ShutdownRequested) if kill_at.is_none() => {
                crate::agent_log!("stopping the task (SIGTERM)");
                let _ = task::kill_group(pid, libc::SIGTERM);
                kill_at = Some(Instant::now() + cfg.kill_grace);
            }
            Ok(Signal::ShutdownRequested) => {}
            Ok(Signal::HostClosed) => {
                crate::agent_log!("the host closed the connection; the task keeps running");
                *host_closed = true;
            }
            Err(RecvTimeoutError::Timeout) => {
                crate::agent_log!("the task ignored SIGTERM for {:?}: SIGKILL", cfg.kill_grace);
                let _ = task::kill_group(pid, libc::SIGKILL);
                kill_at = None;
            }
            // Cannot happen while `tx` is alive; handled rather than trusted.
            Err(RecvTimeoutError::Disconnected) => {
                let e = AgentError::ReadyReply {
                    path: cfg.payload_service.clone(),
                    reason: "the agent's signal channel closed".into(),
                };
                return fail(host, &e);
            }
        }
    };
    crate::agent_debug!("task exited: {code}");
    host.send(&GuestEvent::Finished { exit_code: code });
    Outcome::Finished(code)
}

/// Starts the thread that reports the task's exit: PID 1 reaps every child; a test process
/// waits for the task only.
fn start_waiter(pid: i32, reap_all: bool, tx: Sender<Signal>) -> Result<(), AgentError> {
    let builder = std::thread::Builder::new().name("reaper".into());
    let spawned = if reap_all {
        builder.spawn(move || {
            task::reap_until(pid, |code| {
                let _ = tx.send(Signal::TaskExited(code));
            })
        })
    } else {
        builder.spawn(move || {
            let code = task::wait_task(pid).unwrap_or_else(|e| {
                crate::agent_log!("waiting for the task: {e}");
                128
            });
            let _ = tx.send(Signal::TaskExited(code));
        })
    };
    spawned.map(drop).map_err(|source| AgentError::Spawn {
        command: "reaper thread".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ready::notify_ready;
    use crate::agent::testutil::{
        FakeGuest, FakeSystem, add_partition, app_apk, exec_config, idsig_of,
    };
    use crate::lifecycle::protocol::decode_event;
    use crate::payload::metadata::Metadata;
    use crate::payload::partition::{PartitionType, create_partition};
    use std::fs;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;

    /// The host's end of the connection.
    struct TestHost {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    }

    impl TestHost {
        /// The next event; `None` once the agent has shut its side down.
        fn next(&mut self) -> Option<GuestEvent> {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("an event in time");
            if line.is_empty() {
                return None;
            }
            assert!(line.ends_with('\n'), "{line:?}");
            Some(decode_event(line.trim_end().as_bytes()).unwrap())
        }

        fn shutdown_request(&mut self) {
            self.writer
                .write_all(b"{\"request\":\"shutdown\"}\n")
                .unwrap();
        }
    }

    type Agent = JoinHandle<(Outcome, FakeGuest, FakeSystem)>;

    fn start(guest: FakeGuest, sys: FakeSystem) -> (TestHost, Agent) {
        let (agent_end, host_end) = UnixStream::pair().unwrap();
        host_end
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let host = TestHost {
            reader: BufReader::new(host_end.try_clone().unwrap()),
            writer: host_end,
        };
        let agent = std::thread::spawn(move || {
            let outcome = run(&guest.cfg, &sys, agent_end);
            (outcome, guest, sys)
        });
        (host, agent)
    }

    /// Runs the agent to the end with a host that only listens; returns the events.
    fn run_to_end(
        guest: FakeGuest,
        sys: FakeSystem,
    ) -> (Vec<GuestEvent>, Outcome, FakeGuest, FakeSystem) {
        let (mut host, agent) = start(guest, sys);
        let mut events = Vec::new();
        while let Some(e) = host.next() {
            events.push(e);
        }
        drop(host);
        let (outcome, guest, sys) = agent.join().unwrap();
        (events, outcome, guest, sys)
    }

    fn error_of(events: &[GuestEvent]) -> (ErrorCode, String) {
        match events {
            [
                GuestEvent::Hello { version: 1 },
                GuestEvent::Error { code, message },
            ] => (*code, message.clone()),
            other => panic!("expected hello and one error, got {other:?}"),
        }
    }

    fn wait_for_file(path: &Path) {
        let start = Instant::now();
        while !path.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{path:?} never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_payload_runs_signals_ready_and_finishes() {
        let g = FakeGuest::new("agent-run-ok");
        let go = g.dir.path().join("host/go");
        let script = format!(
            "#!/bin/sh\necho \"task says hi from $(pwd)\"\n\
             while [ ! -e {} ]; do sleep 0.02; done\nexit 3\n",
            go.display()
        );
        g.payload(&app_apk(&exec_config(&g.in_apk("bin/task")), &script));
        let service = g.cfg.payload_service.clone();
        let (mut host, agent) = start(g, FakeSystem::default());

        assert_eq!(host.next(), Some(GuestEvent::Hello { version: 1 }));
        assert_eq!(host.next(), Some(GuestEvent::Started));
        // Two payload notifications: each is answered, the host hears one.
        notify_ready(&service).unwrap();
        notify_ready(&service).unwrap();
        assert_eq!(host.next(), Some(GuestEvent::Ready));
        fs::write(&go, b"").unwrap();
        assert_eq!(host.next(), Some(GuestEvent::Finished { exit_code: 3 }));
        assert_eq!(
            host.next(),
            None,
            "the agent shuts its side down after the last event"
        );
        let closed = Instant::now();
        drop(host);
        let (outcome, g, sys) = agent.join().unwrap();
        assert!(
            closed.elapsed() < Duration::from_secs(1),
            "delivery ends when the host closes"
        );

        assert_eq!(outcome, Outcome::Finished(3));
        assert_eq!(outcome.failure_string(), None);
        assert_eq!(sys.calls(), ["tmpfs apk", "ro apk"]);
        assert!(
            g.console()
                .contains(&format!("task says hi from {}\n", g.cfg.apk_dir.display())),
            "{}",
            g.console()
        );
    }

    #[test]
    fn a_tampered_apk_never_runs() {
        let g = FakeGuest::new("agent-run-tampered");
        let ran = g.dir.path().join("host/ran");
        let script = format!("#!/bin/sh\ntouch {}\n", ran.display());
        let apk = app_apk(&exec_config(&g.in_apk("bin/task")), &script);
        let mut other = apk.clone();
        let last = other.len() - 30;
        other[last] ^= 1;
        g.metadata(&Metadata::for_app("assets/vm_config.json", &[]));
        g.partition("microdroid-apk", &other);
        g.partition("microdroid-apk-idsig", &idsig_of(&g.dir, &apk));

        let (events, outcome, g, sys) = run_to_end(g, FakeSystem::default());
        let (code, message) = error_of(&events);
        assert_eq!(code, ErrorCode::PayloadVerificationFailed);
        assert!(
            message.contains("microdroid-apk") && message.contains("root hash"),
            "{message}"
        );
        assert_eq!(
            outcome.failure_string().as_deref(),
            Some("MICRODROID_PAYLOAD_VERIFICATION_FAILED")
        );
        assert_eq!(sys.calls(), Vec::<String>::new(), "nothing was extracted");
        assert!(!ran.exists());
        drop(g);
    }

    #[test]
    fn a_tampered_extra_apk_is_named() {
        let g = FakeGuest::new("agent-run-extra-tampered");
        g.payload(&app_apk(&exec_config(&g.in_apk("bin/task")), "#!/bin/sh\n"));
        let extra = crate::payload::testutil::zip_of(&[("data.txt", b"extra")]);
        g.partition("extra-apk-0", &extra);
        let other = crate::payload::testutil::zip_of(&[("data.txt", b"something else")]);
        g.partition("extra-idsig-0", &idsig_of(&g.dir, &other));
        let (events, outcome, _g, _sys) = run_to_end(g, FakeSystem::default());
        let (code, message) = error_of(&events);
        assert_eq!(code, ErrorCode::PayloadVerificationFailed);
        assert!(message.contains("extra-apk-0"), "{message}");
        assert!(matches!(outcome, Outcome::Failed { .. }));
    }

    #[test]
    fn extra_apks_are_verified_and_extracted() {
        let g = FakeGuest::new("agent-run-extra");
        let config = format!(
            r#"{{"task":{{"type":"executable","command":{:?}}},"extra_apks":[{{"path":"/data/extra.apk"}}]}}"#,
            g.in_apk("bin/task").to_str().unwrap()
        );
        let script = "#!/bin/sh\nexec cat ../extra-apk/0/data.txt\n";
        g.payload(&app_apk(&config, script));
        g.apk_partitions(
            "extra-apk-0",
            "extra-idsig-0",
            &crate::payload::testutil::zip_of(&[("data.txt", b"from the extra APK")]),
        );
        let (events, outcome, g, sys) = run_to_end(g, FakeSystem::default());
        assert_eq!(outcome, Outcome::Finished(0), "{events:?}");
        assert_eq!(
            sys.calls(),
            ["tmpfs apk", "ro apk", "tmpfs extra-apk", "ro extra-apk"]
        );
        assert!(
            g.console().contains("from the extra APK"),
            "{}",
            g.console()
        );

        // The config and the disk disagree on the number of extra APKs.
        let g = FakeGuest::new("agent-run-extra-count");
        g.payload(&app_apk(&config, script));
        let (events, _, _, _) = run_to_end(g, FakeSystem::default());
        let (code, message) = error_of(&events);
        assert_eq!(code, ErrorCode::Unknown);
        assert!(message.contains("extra_apks"), "{message}");
    }

    #[test]
    fn bad_configs_are_invalid_config_errors_naming_the_problem() {
        let cases: [(&str, Option<Metadata>, &str); 6] = [
            (
                "{\"task\":{\"type\":\"executable\",\"command\":5}}",
                None,
                "task.command",
            ),
            (
                "{\"task\":{\"type\":\"microdroid_launcher\",\"command\":\"libpayload.so\"}}",
                None,
                "microdroid_launcher",
            ),
            ("{}", None, "no task"),
            (
                "{\"task\":{\"type\":\"executable\",\"command\":\"/nonexistent/payload\"}}",
                None,
                "/nonexistent/payload",
            ),
            (
                "{}",
                Some(Metadata::for_app("assets/missing.json", &[])),
                "/mnt/apk/assets/missing.json",
            ),
            (
                "{}",
                Some(Metadata::for_payload_binary("libpayload.so", 0)),
                "microdroid_launcher",
            ),
        ];
        for (config, metadata, needle) in cases {
            let g = FakeGuest::new("agent-run-config");
            match metadata {
                None => g.payload(&app_apk(config, "#!/bin/sh\n")),
                Some(m) => {
                    g.metadata(&m);
                    g.apk_partitions(
                        "microdroid-apk",
                        "microdroid-apk-idsig",
                        &app_apk(config, "#!/bin/sh\n"),
                    );
                }
            }
            let (events, outcome, _g, _sys) = run_to_end(g, FakeSystem::default());
            let (code, message) = error_of(&events);
            assert_eq!(code, ErrorCode::PayloadInvalidConfig, "{message}");
            assert!(message.contains(needle), "{needle}: {message}");
            assert_eq!(
                outcome.failure_string().as_deref(),
                Some("MICRODROID_INVALID_PAYLOAD_CONFIG")
            );
        }
    }

    #[test]
    fn missing_partitions_are_an_unknown_error_naming_them() {
        let g = FakeGuest::new("agent-run-missing");
        g.metadata(&Metadata::for_app("assets/vm_config.json", &[]));
        let (events, outcome, _g, _sys) = run_to_end(g, FakeSystem::default());
        let (code, message) = error_of(&events);
        assert_eq!(code, ErrorCode::Unknown);
        assert!(
            message.contains("microdroid-apk") && message.contains("microdroid-apk-idsig"),
            "{message}"
        );
        let reason = outcome.failure_string().unwrap();
        assert!(
            reason.starts_with("MICRODROID_UNKNOWN_RUNTIME_ERROR|partitions"),
            "{reason}"
        );
    }

    /// A payload whose script traps SIGTERM with `trap_action`, then loops.
    fn looping_payload(name: &str, trap_action: &str) -> (FakeGuest, PathBuf) {
        let g = FakeGuest::new(name);
        let trapped = g.dir.path().join("host/trapped");
        let script = format!(
            "#!/bin/sh\ntrap '{trap_action}' TERM\ntouch {}\nwhile :; do sleep 0.05; done\n",
            trapped.display()
        );
        g.payload(&app_apk(&exec_config(&g.in_apk("bin/task")), &script));
        (g, trapped)
    }

    #[test]
    fn shutdown_stops_the_task_with_sigterm() {
        let (g, trapped) = looping_payload("agent-run-term", "exit 5");
        let (mut host, agent) = start(g, FakeSystem::default());
        assert_eq!(host.next(), Some(GuestEvent::Hello { version: 1 }));
        assert_eq!(host.next(), Some(GuestEvent::Started));
        wait_for_file(&trapped);
        host.shutdown_request();
        assert_eq!(host.next(), Some(GuestEvent::Finished { exit_code: 5 }));
        assert_eq!(host.next(), None);
        drop(host);
        assert_eq!(agent.join().unwrap().0, Outcome::Finished(5));
    }

    #[test]
    fn shutdown_kills_a_task_that_ignores_sigterm() {
        let (g, trapped) = looping_payload("agent-run-kill", "");
        let grace = g.cfg.kill_grace;
        let (mut host, agent) = start(g, FakeSystem::default());
        assert_eq!(host.next(), Some(GuestEvent::Hello { version: 1 }));
        assert_eq!(host.next(), Some(GuestEvent::Started));
        wait_for_file(&trapped);
        let asked = Instant::now();
        host.shutdown_request();
        let code = 128 + libc::SIGKILL;
        assert_eq!(host.next(), Some(GuestEvent::Finished { exit_code: code }));
        assert!(asked.elapsed() >= grace);
        drop(host);
        assert_eq!(agent.join().unwrap().0, Outcome::Finished(code));
    }

    #[test]
    fn shutdown_before_the_task_starts_cancels_it() {
        let mut g = FakeGuest::new("agent-run-cancel");
        g.cfg.partition_wait = Duration::from_secs(10);
        let ran = g.dir.path().join("host/ran");
        let apk = app_apk(
            &exec_config(&g.in_apk("bin/task")),
            &format!("#!/bin/sh\ntouch {}\n", ran.display()),
        );
        g.metadata(&Metadata::for_app("assets/vm_config.json", &[]));
        let idsig = idsig_of(&g.dir, &apk);
        let cfg = g.cfg.clone();
        let (mut host, agent) = start(g, FakeSystem::default());
        assert_eq!(host.next(), Some(GuestEvent::Hello { version: 1 }));
        host.shutdown_request();
        // The agent is still waiting for its partitions; give the request time to arrive.
        std::thread::sleep(Duration::from_millis(200));
        add_partition(&cfg, "vdb1", "microdroid-apk", &apk);
        add_partition(&cfg, "vdb2", "microdroid-apk-idsig", &idsig);
        assert_eq!(host.next(), None, "no started, no task");
        drop(host);
        let (outcome, g, _) = agent.join().unwrap();
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(outcome.failure_string(), None);
        assert!(!ran.exists());
        drop(g);
    }

    #[test]
    fn the_task_runs_on_when_the_host_goes_away() {
        let g = FakeGuest::new("agent-run-host-gone");
        let done = g.dir.path().join("host/done");
        let script = format!("#!/bin/sh\nsleep 0.2\ntouch {}\nexit 4\n", done.display());
        g.payload(&app_apk(&exec_config(&g.in_apk("bin/task")), &script));
        let (mut host, agent) = start(g, FakeSystem::default());
        assert_eq!(host.next(), Some(GuestEvent::Hello { version: 1 }));
        drop(host);
        let (outcome, _g, _) = agent.join().unwrap();
        assert_eq!(outcome, Outcome::Finished(4));
        assert!(done.exists());
    }

    #[test]
    fn storage_is_formatted_once_then_mounted() {
        let g = FakeGuest::new("agent-run-storage");
        g.payload(&app_apk(&exec_config(&g.in_apk("bin/task")), "#!/bin/sh\n"));
        // As the host creates it (`micro-vmm create-partition --type encryptedstore`).
        let image = g.dir.path().join("host/storage.img");
        create_partition(&image, 1 << 16, PartitionType::EncryptedStore).unwrap();
        let store = fs::read(&image).unwrap();
        let dev = g.partition("encryptedstore", &store);
        let name = dev.file_name().unwrap().to_str().unwrap().to_string();
        let (_, outcome, g, sys) = run_to_end(g, FakeSystem::default());
        assert_eq!(outcome, Outcome::Finished(0));
        assert_eq!(
            sys.calls(),
            [
                "tmpfs apk".to_string(),
                "ro apk".into(),
                format!("mke2fs {name}"),
                format!("ext4 {name} encryptedstore"),
            ]
        );
        assert_eq!(fs::read(&dev).unwrap()[..19], [0u8; 19]);

        // Formatted already: mounted only. (A fresh guest over the same device contents.)
        let g2 = FakeGuest::new("agent-run-storage-2");
        g2.payload(&app_apk(
            &exec_config(&g2.in_apk("bin/task")),
            "#!/bin/sh\n",
        ));
        let dev2 = g2.partition("encryptedstore", &fs::read(&dev).unwrap());
        drop(g);
        let (_, outcome, _g2, sys) = run_to_end(g2, FakeSystem::default());
        assert_eq!(outcome, Outcome::Finished(0));
        let name2 = dev2.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(sys.calls()[2..], [format!("ext4 {name2} encryptedstore")]);

        // Formatting fails: an error, and the mark stays for the next boot.
        let g3 = FakeGuest::new("agent-run-storage-3");
        g3.payload(&app_apk(
            &exec_config(&g3.in_apk("bin/task")),
            "#!/bin/sh\n",
        ));
        let dev3 = g3.partition("encryptedstore", &store);
        let sys = FakeSystem {
            fail_format: true,
            ..FakeSystem::default()
        };
        let (events, outcome, _g3, _) = run_to_end(g3, sys);
        let (code, message) = error_of(&events);
        assert_eq!(code, ErrorCode::Unknown);
        assert!(message.contains("mke2fs"), "{message}");
        assert!(matches!(outcome, Outcome::Failed { .. }));
        assert!(fs::read(&dev3).unwrap().starts_with(b"UNFORMATTED-STORAGE"));
    }
}
