//! Running a VM: `vm run` starts `micro-vmm --app` over the VM directory and watches it until
//! it stops, then records `last_stop.json`. The watcher (the monitor) is the `vm run` process
//! itself, or with `--detach` a re-executed `micro-vmm vm monitor` in its own session.
//!
//! The run lock ([`super::lock`]) is taken before anything starts and shared with the VMM,
//! so a second `run` fails while either lives. The monitor blocks SIGINT, SIGTERM and SIGHUP
//! and forwards them to the VMM (which stops cleanly), so it always outlives the VMM and
//! writes the record.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::payload::config::VmPayloadConfig;

use super::capture;
use super::config::VmAppConfig;
use super::control::{self, Client};
use super::follow::{Follower, POLL};
use super::home::{self, Home, VmDir};
use super::lock::{self, RunLock};
use super::reason::{self, LastStop, PrintedEvents, ProcessEnd, ReasonSource};
use super::{ManagerError, store};

/// Overrides the micro-vmm binary the manager runs (tests); else the running executable.
pub const BIN_ENV: &str = "MICRO_VMM_BIN";
/// How long `stop` gives the guest before the VM is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time `stop` waits for the monitor's record after the deadline, and after a kill.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long `run --detach` waits for the monitor to report the VM started.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

/// `run.json`: the current run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The micro-vmm process.
    pub pid: u32,
    pub monitor_pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The micro-vmm binary to run.
pub fn vmm_binary() -> Result<PathBuf, ManagerError> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(ManagerError::io("find", "the micro-vmm executable"))
}

/// The `micro-vmm --app ...` arguments for a VM directory.
pub fn app_args(vm: &VmDir, config: &VmAppConfig, extra_apks: usize) -> Vec<String> {
    let p = |f: &str| vm.file(f).display().to_string();
    let mut a: Vec<String> = vec![
        "--app".into(),
        config.apk.display().to_string(),
        p(home::IDSIG),
        config.config_path.clone().unwrap_or_default(),
        "--instance".into(),
        p(home::INSTANCE_IMG),
        "--instance-id-file".into(),
        p(home::INSTANCE_ID),
    ];
    if config.encrypted_storage_bytes > 0 {
        a.extend([
            "--storage".into(),
            p(home::STORAGE_IMG),
            "--storage-size".into(),
            config.encrypted_storage_bytes.to_string(),
        ]);
    }
    for i in 0..extra_apks {
        a.extend([
            "--extra-idsig".into(),
            vm.extra_idsig(i).display().to_string(),
        ]);
    }
    if let Some(mib) = config.memory_mib {
        a.extend(["--mem".into(), mib.to_string()]);
    }
    a.extend(["--cpus".into(), config.cpus.to_string()]);
    if config.debug {
        a.push("--debug".into());
    }
    a.extend([
        "--socket".into(),
        p(home::CONTROL_SOCK),
        "--serial".into(),
        format!("file:{}", p(home::CONSOLE_LOG)),
        "--log".into(),
        format!("file:{}", p(home::FAILURE_LOG)),
    ]);
    if let Some(os) = &config.os_config {
        a.extend(["--os-config".into(), os.display().to_string()]);
    }
    if let Some(dir) = &config.guest_dir {
        a.extend(["--guest-dir".into(), dir.display().to_string()]);
    }
    if let Some(mib) = config.output_limit_mib {
        a.extend(["--output-limit".into(), mib.to_string()]);
    }
    a
}

/// `vm run NAME [--detach]`. In the foreground: streams the console to stdout and micro-vmm's
/// messages to stderr, returns micro-vmm's exit code. Detached: returns once the VM started.
pub fn run(home: &Home, vm_name: &str, detach: bool) -> Result<i32, ManagerError> {
    let vm = store::existing(home, vm_name)?;
    let config = store::load_config(&vm)?;
    let lock = RunLock::try_acquire(&vm)?.ok_or_else(|| ManagerError::Running {
        name: vm_name.to_string(),
        action: "running it again",
    })?;
    if detach {
        return spawn_detached(&vm, lock);
    }
    let mut out = io::stdout();
    let mut err = io::stderr();
    let end = watch(&vm, &config, lock, Some((&mut out, &mut err)), |_| {})?;
    Ok(match end {
        ProcessEnd::Exited(c) => c,
        ProcessEnd::Signaled(s) => 128 + s,
    })
}

/// Starts `micro-vmm vm monitor NAME --lock-fd N` in a new session and waits for its first
/// line: `started <pid>` or an error.
fn spawn_detached(vm: &VmDir, lock: RunLock) -> Result<i32, ManagerError> {
    lock.inherit_on_exec()
        .map_err(ManagerError::io("fcntl", vm.file(home::LOCK)))?;
    let exe = std::env::current_exe().map_err(ManagerError::io("find", "micro-vmm"))?;
    let log = vm.file("monitor.log");
    let log_file = File::create(&log).map_err(ManagerError::io("create", &log))?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "vm",
        "monitor",
        vm.name(),
        "--lock-fd",
        &lock.raw_fd().to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(log_file);
    // SAFETY: setsid is async-signal-safe; it detaches the monitor from our terminal and
    // process group, so the monitor outlives this command and its terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ManagerError::io("spawn", &exe))?;
    drop(lock); // the monitor has its own copy now
    let Some(stdout) = child.stdout.take() else {
        return Err(ManagerError::Failed("no pipe to the monitor".into()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(io::Read::take(stdout, 4096)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DETACH_TIMEOUT).unwrap_or_default();
    // The monitor runs on in its own session; it is reaped by init once we exit.
    match line.trim().strip_prefix("started ") {
        Some(pid) => {
            eprintln!("micro-vmm: VM {} started (micro-vmm pid {pid})", vm.name());
            Ok(0)
        }
        None => Err(ManagerError::Failed(format!(
            "the VM {} did not start: {}",
            vm.name(),
            line.trim()
                .strip_prefix("error: ")
                .unwrap_or("no word from the monitor (see monitor.log)")
        ))),
    }
}

/// `vm monitor NAME --lock-fd N` (hidden): the detached monitor. Reports on stdout, then
/// closes it.
pub fn monitor_detached(home: &Home, vm_name: &str, lock_fd: i32) -> i32 {
    let report = |line: &str| {
        let mut out = io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    // SAFETY: `vm run --detach` passed us this descriptor for exactly this use.
    let lock = match unsafe { RunLock::from_inherited(lock_fd) } {
        Ok(l) => l,
        Err(e) => {
            report(&format!("error: the run lock descriptor {lock_fd}: {e}"));
            return 1;
        }
    };
    let result = store::existing(home, vm_name).and_then(|vm| {
        let config = store::load_config(&vm)?;
        watch(&vm, &config, lock, None, |started| match started {
            Ok(pid) => {
                report(&format!("started {pid}"));
                close_stdout();
            }
            Err(e) => report(&format!("error: {e}")),
        })
    });
    match result {
        Ok(_) => 0,
        Err(e) => {
            report(&format!("error: {e}"));
            log::error!("{e}");
            1
        }
    }
}

fn close_stdout() {
    // SAFETY: replacing fd 1 with /dev/null so the detaching parent sees EOF; nothing else
    // in this process writes to stdout afterwards.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
}

/// Starts the VMM for `vm` and waits for its end; records `last_stop.json`. `stream` gets
/// the console and micro-vmm's messages as they come; `started` hears the VMM's pid or the
/// spawn error.
fn watch(
    vm: &VmDir,
    config: &VmAppConfig,
    lock: RunLock,
    mut stream: Option<(&mut dyn Write, &mut dyn Write)>,
    started: impl FnOnce(Result<u32, &ManagerError>),
) -> Result<ProcessEnd, ManagerError> {
    let signals = StopSignals::block()?;
    clear_previous_run(vm)?;
    let vmm_log = vm.file(home::VMM_LOG);
    let vmm_log_file = File::create(&vmm_log).map_err(ManagerError::io("create", &vmm_log))?;
    let output_limit = config.output_limit().map_err(ManagerError::Failed)?;
    let console = vm.file(home::CONSOLE_LOG);
    File::create(&console).map_err(ManagerError::io("create", &console))?;
    let extra_apks = config
        .config_path
        .as_deref()
        .and_then(|p| VmPayloadConfig::from_apk(&config.apk, p).ok())
        .map_or(0, |c| c.extra_apks.len());
    let bin = vmm_binary()?;
    lock.inherit_on_exec()
        .map_err(ManagerError::io("fcntl", vm.file(home::LOCK)))?;
    let mut cmd = Command::new(&bin);
    cmd.args(app_args(vm, config, extra_apks))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Through a pipe, so that vmm.log gets the output limit too (manager::capture).
        .stderr(Stdio::piped());
    // SAFETY: sigprocmask is async-signal-safe; the VMM starts with the stop signals
    // unblocked, as if started from a shell.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let err = ManagerError::io("spawn", &bin)(e);
            started(Err(&err));
            return Err(err);
        }
    };
    let pid = child.id();
    let capture = child
        .stderr
        .take()
        .map(|from| capture::spawn("vmm-log", from, vmm_log_file, output_limit))
        .transpose()
        .map_err(ManagerError::io("start the capture of", &vmm_log))?;
    let info = RunInfo {
        pid,
        monitor_pid: std::process::id(),
        started_at: now(),
    };
    let json = serde_json::to_vec(&info).unwrap_or_default();
    if let Err(e) = store::write_file_atomically(&vm.file(home::RUN), &json) {
        log::warn!("{e}");
    }
    started(Ok(pid));

    let exited = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let sock = vm.file(home::CONTROL_SOCK);
        let exited = Arc::clone(&exited);
        Some(thread::spawn(move || subscribe_when_up(&sock, &exited)))
    };

    let status = wait_streaming(&mut child, &signals, vm, stream.as_mut())?;
    exited.store(true, Ordering::Relaxed);
    // vmm.log is complete once the pipe's last writer is gone (micro-vmm has exited).
    if let Some(t) = capture {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished()
            && let Ok(c) = t.join()
            && c.dropped > 0
        {
            log::warn!("vmm.log: {} bytes over the output limit dropped", c.dropped);
        }
    }
    let stopped = subscriber.and_then(|t| {
        // The socket closes with the VMM; do not hang on a server that never answers.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            t.join().ok().flatten()
        } else {
            None
        }
    });
    let end = match (status.code(), status.signal()) {
        (Some(c), _) => ProcessEnd::Exited(c),
        (None, Some(s)) => ProcessEnd::Signaled(s),
        (None, None) => ProcessEnd::Signaled(0),
    };
    let printed = PrintedEvents::read(&vmm_log);
    let record = LastStop {
        reason: match stopped {
            Some(s) => s.reason,
            None => reason::derive(
                end,
                &printed,
                &crate::lifecycle::read_failure_string(&vm.file(home::FAILURE_LOG)),
            ),
        },
        exit_code: status.code(),
        signal: status.signal(),
        payload_exit_code: printed.payload_finished,
        source: if stopped.is_some() {
            ReasonSource::ControlSocket
        } else {
            ReasonSource::ExitStatus
        },
        at: now(),
    };
    record.write(&vm.file(home::LAST_STOP))?;
    let _ = std::fs::remove_file(vm.file(home::RUN));
    drop(lock);
    Ok(end)
}

/// Removes what an earlier run left: its failure string, its `run.json` and its
/// `last_stop.json`, durably (the directory is synced), before this run starts. If the VMM and
/// this monitor are then killed (kill -9), no stop reason of the earlier run is left looking
/// like this run's.
fn clear_previous_run(vm: &VmDir) -> Result<(), ManagerError> {
    for f in [home::FAILURE_LOG, home::RUN, home::LAST_STOP] {
        let path = vm.file(f);
        crate::fsutil::remove_file_durably(&path).map_err(ManagerError::io("remove", &path))?;
    }
    Ok(())
}

/// Waits for the VMM, forwarding stop signals to it and copying its logs to `stream`.
fn wait_streaming(
    child: &mut Child,
    signals: &StopSignals,
    vm: &VmDir,
    mut stream: Option<&mut (&mut dyn Write, &mut dyn Write)>,
) -> Result<ExitStatus, ManagerError> {
    let (console, vmm_log) = (vm.file(home::CONSOLE_LOG), vm.file(home::VMM_LOG));
    let mut followers = (Follower::new(&console), Follower::new(&vmm_log));
    loop {
        let status = child
            .try_wait()
            .map_err(ManagerError::io("wait", "micro-vmm"))?;
        if let Some((out, err)) = stream.as_mut() {
            // Console output that cannot be written (a closed pipe) is not a reason to stop
            // watching the VM.
            let _ = followers.0.pump(*out);
            let _ = followers.1.pump(*err);
        }
        if let Some(status) = status {
            return Ok(status);
        }
        if let Some(sig) = signals.pending() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        thread::sleep(POLL);
    }
}

/// Subscribes to the VM's control socket as soon as it is up; the `stopped` event.
fn subscribe_when_up(sock: &Path, exited: &AtomicBool) -> Option<control::Stopped> {
    while !exited.load(Ordering::Relaxed) {
        if let Ok(client) = Client::connect(sock) {
            return match client.subscribe(|ev| log::debug!("event {ev}")) {
                Ok(None) => {
                    log::info!("{}: closed without a stopped event", sock.display());
                    None
                }
                Ok(stopped) => stopped,
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            };
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// SIGINT, SIGTERM and SIGHUP, blocked in the monitor and polled.
struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    fn block() -> Result<StopSignals, ManagerError> {
        // SAFETY: building a signal set and blocking it for this thread (and the threads it
        // starts later); no handlers are involved.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(ManagerError::io("block", "stop signals")(
                    io::Error::from_raw_os_error(r),
                ));
            }
            Ok(StopSignals { set })
        }
    }

    /// A pending stop signal, consumed.
    fn pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: sigtimedwait with a zero timeout on a set we blocked.
        let s = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
        (s > 0).then_some(s)
    }
}

/// `vm stop NAME`: asks the VM to stop over its control socket (without one, SIGTERM: the
/// VMM stops cleanly), waits for the monitor's record; after the deadline, SIGKILL.
pub fn stop(home: &Home, vm_name: &str, timeout: Duration) -> Result<LastStop, ManagerError> {
    let vm = store::existing(home, vm_name)?;
    if !lock::is_running(&vm)? {
        return Err(ManagerError::NotRunning(vm_name.to_string()));
    }
    let pid = read_run_info(&vm).map(|r| r.pid);
    let asked = Client::connect(&vm.file(home::CONTROL_SOCK)).and_then(|mut c| c.stop(timeout));
    if let Err(e) = &asked {
        log::info!("{e}; sending SIGTERM instead");
        if let Some(pid) = pid {
            signal(pid, libc::SIGTERM);
        }
    }
    if !wait_stopped(&vm, timeout.saturating_add(STOP_MARGIN))? {
        if let Some(pid) = pid {
            eprintln!("micro-vmm: the VM {vm_name} did not stop in time; killing it");
            signal(pid, libc::SIGKILL);
        }
        if !wait_stopped(&vm, STOP_MARGIN)? {
            return Err(ManagerError::Timeout(format!(
                "the VM {vm_name} is still running"
            )));
        }
    }
    LastStop::read(&vm.file(home::LAST_STOP))?
        .ok_or_else(|| ManagerError::Failed(format!("the VM {vm_name} stopped without a record")))
}

/// The current run, when `run.json` is readable.
pub fn read_run_info(vm: &VmDir) -> Option<RunInfo> {
    let text = reason::read_tail(&vm.file(home::RUN), 4096);
    serde_json::from_str(&text).ok()
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2); the pid is the VMM's, read from run.json while the run lock is held.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits until the run lock is free: the VMM and the monitor are gone.
pub fn wait_stopped(vm: &VmDir, timeout: Duration) -> Result<bool, ManagerError> {
    // No deadline when it would not fit an Instant (the CLI bounds the timeout anyway).
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if !lock::is_running(vm)? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        thread::sleep(POLL);
    }
}

/// `vm console NAME`: the console so far, then as it grows until the VM stops.
pub fn console(home: &Home, vm_name: &str) -> Result<(), ManagerError> {
    let vm = store::existing(home, vm_name)?;
    let path = vm.file(home::CONSOLE_LOG);
    let mut out = io::stdout();
    let mut err = None;
    super::follow::follow(&path, &mut out, || match lock::is_running(&vm) {
        Ok(r) => !r,
        Err(e) => {
            err = Some(e);
            true
        }
    })
    .map_err(ManagerError::io("follow", &path))?;
    err.map_or(Ok(()), Err)
}

/// `vm connect-vsock NAME PORT`: bridges stdin and stdout to the guest's vsock port.
pub fn connect_vsock(home: &Home, vm_name: &str, port: u32) -> Result<(), ManagerError> {
    let vm = store::existing(home, vm_name)?;
    if !lock::is_running(&vm)? {
        return Err(ManagerError::NotRunning(vm_name.to_string()));
    }
    if port < 1024 {
        return Err(ManagerError::Failed(format!(
            "port {port} is below 1024 (Android's MIN_VSOCK_PORT)"
        )));
    }
    let sock = vm.file(home::CONTROL_SOCK);
    let fd = Client::connect(&sock)?.connect_vsock(port)?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    let mut to_guest = stream.try_clone().map_err(ManagerError::io("dup", &sock))?;
    thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_guest);
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let mut from_guest = &stream;
    io::copy(&mut from_guest, &mut io::stdout().lock())
        .map_err(ManagerError::io("copy from", &sock))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starts_without_the_previous_runs_records() {
        let t = crate::disk::testutil::TempDir::new("mgr-stale");
        let home = Home::at(t.path());
        let vm = home.vm("a").unwrap();
        std::fs::create_dir_all(vm.path()).unwrap();
        for f in [home::FAILURE_LOG, home::RUN, home::LAST_STOP, home::CONFIG] {
            std::fs::write(vm.file(f), b"{}").unwrap();
        }
        clear_previous_run(&vm).unwrap();
        for f in [home::FAILURE_LOG, home::RUN, home::LAST_STOP] {
            assert!(!vm.file(f).exists(), "{f}");
        }
        assert!(vm.file(home::CONFIG).exists());
        // Nothing to remove is fine; something that cannot be removed is an error.
        clear_previous_run(&vm).unwrap();
        std::fs::create_dir(vm.file(home::LAST_STOP)).unwrap();
        let e = clear_previous_run(&vm).unwrap_err();
        assert!(e.to_string().contains("last_stop.json"), "{e}");
    }

    #[test]
    fn app_arguments_follow_the_vm_directory() {
        let home = Home::at("/h");
        let vm = home.vm("a").unwrap();
        let mut c = VmAppConfig::parse(
            br#"{"apk": "/x.apk", "config_path": "assets/c.json", "memory_mib": 64, "cpus": 2,
                 "debug": true, "encrypted_storage_bytes": 8192, "os_config": "/os.json",
                 "guest_dir": "/g"}"#,
            Path::new("c"),
        )
        .unwrap();
        let a = app_args(&vm, &c, 2).join(" ");
        for want in [
            "--app /x.apk /h/vm/a/idsig assets/c.json",
            "--instance /h/vm/a/instance.img",
            "--instance-id-file /h/vm/a/instance_id",
            "--storage /h/vm/a/storage.img --storage-size 8192",
            "--extra-idsig /h/vm/a/extra_idsig_0 --extra-idsig /h/vm/a/extra_idsig_1",
            "--mem 64 --cpus 2 --debug",
            "--serial file:/h/vm/a/console.log --log file:/h/vm/a/failure.log",
            "--os-config /os.json --guest-dir /g",
        ] {
            assert!(a.contains(want), "{want:?} not in {a}");
        }
        assert!(a.contains("--socket /h/vm/a/control.sock"), "{a}");
        c.encrypted_storage_bytes = 0;
        c.memory_mib = None;
        c.debug = false;
        let a = app_args(&vm, &c, 0).join(" ");
        for absent in ["--storage", "--mem", "--debug", "--extra-idsig"] {
            assert!(!a.contains(absent), "{absent} in {a}");
        }
    }
}
