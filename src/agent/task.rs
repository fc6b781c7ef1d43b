//! The payload's task: spawning it (directly, not through a shell), its exit status, killing
//! it, and reaping children.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::AgentError;

/// The task's environment: `PATH` and nothing else.
pub const TASK_PATH: &str = "/bin:/sbin";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The executable (an absolute path in the guest).
    pub command: PathBuf,
    /// The working directory (`/mnt/apk`).
    pub cwd: PathBuf,
    /// Where stdout and stderr go (`/dev/console`).
    pub output: PathBuf,
}

/// Starts the task: stdin `/dev/null`, stdout and stderr appended to `spec.output`, the
/// environment only `PATH=/bin:/sbin`. Returns its pid; the caller waits for it with
/// [`wait_task`] or [`reap_until`].
pub fn spawn(spec: &TaskSpec) -> Result<i32, AgentError> {
    let spawn_err = |source| AgentError::Spawn {
        command: spec.command.clone(),
        source,
    };
    let out = OpenOptions::new()
        .append(true)
        .open(&spec.output)
        .map_err(|e| AgentError::Io {
            op: "open the task's output",
            path: spec.output.clone(),
            source: e,
        })?;
    let err = out.try_clone().map_err(spawn_err)?;
    let child = Command::new(&spec.command)
        .current_dir(&spec.cwd)
        .env_clear()
        .env("PATH", TASK_PATH)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, so a shutdown reaches the task's children too.
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    // Dropping the Child neither waits for nor kills it; the pid is waited for by hand so
    // PID 1 can reap every child with one waitpid(-1) loop.
    i32::try_from(child.id()).map_err(|_| spawn_err(io::Error::other("pid out of range")))
}

/// The exit code reported for a wait status: the exit status, or 128 + the signal number.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        // Stopped or continued: not an end; waitpid without WUNTRACED never reports these.
        128
    }
}

/// `waitpid(pid, 0)`, retried on EINTR: the raw wait status of a child that ended.
fn waitpid(pid: libc::pid_t) -> io::Result<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only the status integer, which outlives the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok((r, status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits for the task `pid` only (a process that is not PID 1). Returns its exit code.
pub fn wait_task(pid: i32) -> io::Result<i32> {
    waitpid(pid).map(|(_, status)| exit_code(status))
}

/// PID 1's reaper: waits for any child, reporting the task's exit code through `on_exit`
/// when `pid` ends, and keeps reaping orphans afterwards. Never returns; run it on its own
/// thread once the task is spawned.
pub fn reap_until(pid: i32, on_exit: impl FnOnce(i32)) -> ! {
    let mut on_exit = Some(on_exit);
    loop {
        match waitpid(-1) {
            Ok((p, status)) if p == pid => {
                if let Some(f) = on_exit.take() {
                    f(exit_code(status));
                }
            }
            Ok(_) => {}
            // No children right now: orphans may still be re-parented to PID 1 later.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// Sends `signal` to `pid` (an error if it is gone already).
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to the task's process group (the task leads it; see [`spawn`]).
pub fn kill_group(pid: i32, signal: libc::c_int) -> io::Result<()> {
    kill(-pid, signal)
}

/// Checks, before `started` is sent, that the command can be a task here: an absolute path
/// to a regular file that has an execute bit. The error names the config key.
pub fn check_executable(command: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !command.is_absolute() {
        return Err(format!("task.command {command:?} is not an absolute path"));
    }
    let meta = std::fs::metadata(command).map_err(|e| format!("task.command {command:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("task.command {command:?} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("task.command {command:?} is not executable"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
        let p = dir.file(name, format!("#!/bin/sh\n{body}\n").as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn runs_the_command_directly_with_its_environment() {
        let dir = TempDir::new("agent-task");
        let out = dir.file("console", b"");
        let cmd = script(
            &dir,
            "task.sh",
            "echo \"cwd=$(pwd) path=$PATH home=${HOME-unset} args=$#\"; read x && echo \"stdin=$x\"; echo err >&2; exit 7",
        );
        let spec = TaskSpec {
            command: cmd,
            cwd: dir.path().to_path_buf(),
            output: out.clone(),
        };
        let pid = spawn(&spec).unwrap();
        assert_eq!(wait_task(pid).unwrap(), 7);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            format!(
                "cwd={} path=/bin:/sbin home=unset args=0\nerr\n",
                dir.path().display()
            )
        );
    }

    #[test]
    fn signals_become_128_plus_the_number() {
        let dir = TempDir::new("agent-task-signal");
        let spec = TaskSpec {
            command: script(&dir, "sleep.sh", "exec sleep 30"),
            cwd: dir.path().to_path_buf(),
            output: dir.file("console", b""),
        };
        let pid = spawn(&spec).unwrap();
        kill(pid, libc::SIGTERM).unwrap();
        assert_eq!(wait_task(pid).unwrap(), 128 + libc::SIGTERM);
        assert!(kill(pid, 0).is_err());
    }

    #[test]
    fn spawn_errors_name_the_command() {
        let dir = TempDir::new("agent-task-missing");
        let spec = TaskSpec {
            command: dir.path().join("nope"),
            cwd: dir.path().to_path_buf(),
            output: dir.file("console", b""),
        };
        let err = spawn(&spec).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn executables_are_checked_before_starting() {
        let dir = TempDir::new("agent-task-check");
        let ok = script(&dir, "ok.sh", "true");
        let plain = dir.file("plain", b"data");
        assert_eq!(check_executable(&ok), Ok(()));
        for (path, needle) in [
            (PathBuf::from("relative/x"), "absolute"),
            (dir.path().join("missing"), "missing"),
            (dir.path().to_path_buf(), "not a file"),
            (plain, "not executable"),
        ] {
            let err = check_executable(&path).unwrap_err();
            assert!(
                err.contains("task.command") && err.contains(needle),
                "{err}"
            );
        }
    }
}
