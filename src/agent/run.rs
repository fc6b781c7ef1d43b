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
    crate::agent_log!("done: {outcome:?}");
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
    crate::agent_log!("task {:?} started, pid {pid}", spec.command);
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
    crate::agent_log!("task exited: {code}");
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
