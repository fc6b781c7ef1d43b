//! The VMM's sandbox (docs/security.md): a seccomp filter per thread kind, a landlock ruleset
//! limiting the file system to what the configuration names, and an optional drop to an
//! unprivileged uid/gid.
//!
//! [`prepare`] compiles everything once, before the VM's first thread starts. Each thread
//! then calls [`enter`] on itself before it does its work (a vCPU before its first KVM_RUN,
//! the main thread once every other thread runs): it drops its credentials, restricts
//! itself with the landlock ruleset and installs its own filter. Credentials, landlock
//! domains and seccomp filters are all per thread in Linux, so every thread does all three.
//! Without [`prepare`] (`--sandbox off`, unit tests, the other commands) [`enter`] does
//! nothing.

mod landlock;
mod seccomp;
mod syscall_names;
mod trap;

use std::path::PathBuf;
use std::sync::OnceLock;

use seccompiler::BpfProgram;

pub use trap::EXIT_SECCOMP;

/// Environment variable (debug builds only): the thread kind named in it makes a forbidden
/// system call right after entering its sandbox (tests/sandbox.rs).
pub const TEST_FORBIDDEN_SYSCALL_ENV: &str = "MICRO_VMM_TEST_FORBIDDEN_SYSCALL";
/// Environment variable (debug builds only): the main thread tries to open this path once
/// sandboxed and prints the result (tests/sandbox.rs).
pub const TEST_OPEN_ENV: &str = "MICRO_VMM_TEST_OPEN";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    #[error("landlock: {0}")]
    Landlock(String),
    #[error("sandbox path {path:?}: {reason}")]
    Path { path: PathBuf, reason: String },
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    #[error("cannot open {flag} output {path:?}: {source}")]
    Output {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot give {path:?} to uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        source: std::io::Error,
    },
    #[error("cannot drop to uid {uid} gid {gid}: {source}")]
    Credentials {
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error(
        "{dir:?} is not writable by uid {uid} gid {gid}: after dropping to that user micro-vmm \
         could not remove its socket files there at exit; put the sockets in a directory the \
         user can write"
    )]
    SocketDir { dir: PathBuf, uid: u32, gid: u32 },
    #[error("the sandbox is already prepared")]
    AlreadyPrepared,
}

impl SandboxError {
    /// Errors caused by a path the user passed (exit 35), as opposed to host failures.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            SandboxError::Output { .. }
                | SandboxError::Path { .. }
                | SandboxError::SocketDir { .. }
        )
    }
}

/// The kinds of VMM threads; each has its own seccomp allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once the VM runs (and what it does after: app clean-up).
    Main,
    /// `vcpuN`.
    Vcpu,
    /// `devices`: the virtio event loop.
    Devices,
    /// `out-*`: one output buffer to one host file.
    Output,
    /// `console-in`.
    ConsoleIn,
    /// `lifecycle` (`--app`).
    Lifecycle,
    /// `control` (`--socket`).
    Control,
    /// `control-pause`, `control-vsock`.
    ControlHelper,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Devices,
        ThreadKind::Output,
        ThreadKind::ConsoleIn,
        ThreadKind::Lifecycle,
        ThreadKind::Control,
        ThreadKind::ControlHelper,
    ];

    /// The name the test hook uses.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Devices => "devices",
            ThreadKind::Output => "output",
            ThreadKind::ConsoleIn => "console-in",
            ThreadKind::Lifecycle => "lifecycle",
            ThreadKind::Control => "control",
            ThreadKind::ControlHelper => "control-helper",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An unprivileged user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// What the sandboxed process may still reach in the file system. Only opens after a
/// thread entered its sandbox are checked: files opened before (/dev/kvm, disks, outputs)
/// keep working.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Files to read (kernel, initrd, firmware, read-only disks).
    pub read_only: Vec<PathBuf>,
    /// Files to read and write (writable disks, output files).
    pub read_write: Vec<PathBuf>,
    /// Output files (with the flag that named them), created empty here when missing so
    /// that a rule can name them.
    pub outputs: Vec<(&'static str, PathBuf)>,
    /// Directories with full access beneath (`--app`'s private work directory).
    pub dirs: Vec<PathBuf>,
    /// Directories holding the VMM's socket files (removed at the end).
    pub socket_dirs: Vec<PathBuf>,
    /// Directories from which the VMM removes an emptied directory at the end (the parent
    /// of `--app`'s work directory).
    pub dir_parents: Vec<PathBuf>,
    /// Paths given to the unprivileged user before the drop (recursively): what the VMM
    /// must still remove or rebind afterwards.
    pub chown: Vec<PathBuf>,
    /// Drop to this uid/gid (every thread, on entering).
    pub credentials: Option<Credentials>,
}

struct Prepared {
    filters: Vec<BpfProgram>,
    ruleset: Option<::landlock::RulesetCreated>,
    credentials: Option<Credentials>,
}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

/// Compiles the filters and the ruleset for `policy` and installs the SIGSYS handler; from
/// now on [`enter`] sandboxes the calling thread. Call it before the VM's first thread.
pub fn prepare(policy: &Policy) -> Result<(), SandboxError> {
    if PREPARED.get().is_some() {
        return Err(SandboxError::AlreadyPrepared);
    }
    let kick = vmm_sys_util::signal::SIGRTMIN();
    let filters = ThreadKind::ALL
        .iter()
        .map(|&k| seccomp::compile(k, kick))
        .collect::<Result<Vec<_>, _>>()?;
    for (flag, p) in &policy.outputs {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(|source| SandboxError::Output {
                flag,
                path: p.clone(),
                source,
            })?;
    }
    if let Some(c) = policy.credentials {
        for dir in &policy.socket_dirs {
            let meta = std::fs::metadata(dir).map_err(|e| SandboxError::Path {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            if !writable_by(&meta, c) {
                return Err(SandboxError::SocketDir {
                    dir: dir.clone(),
                    uid: c.uid,
                    gid: c.gid,
                });
            }
        }
        for p in &policy.chown {
            chown_tree(p, c)?;
        }
    }
    let mut policy = policy.clone();
    policy
        .read_write
        .extend(policy.outputs.iter().map(|(_, p)| p.clone()));
    let ruleset = landlock::ruleset(&policy)?;
    if ruleset.is_none() {
        log::warn!(
            "landlock is not supported by this kernel: the file system is not confined \
             (seccomp still is)"
        );
    }
    trap::install().map_err(SandboxError::Handler)?;
    PREPARED
        .set(Prepared {
            filters,
            ruleset,
            credentials: policy.credentials,
        })
        .map_err(|_| SandboxError::AlreadyPrepared)
}

/// True once [`prepare`] ran: threads are sandboxed when they [`enter`].
pub fn is_prepared() -> bool {
    PREPARED.get().is_some()
}

/// Sandboxes the calling thread as a `kind` thread. Without [`prepare`] it does nothing. A
/// failure ends the process (exit 1) with a message: a thread must not run unconfined when
/// the sandbox was asked for.
pub fn enter(kind: ThreadKind) {
    let hooks = TestHooks::read(kind);
    let Some(p) = PREPARED.get() else {
        hooks.run();
        return;
    };
    let name = std::thread::current()
        .name()
        .unwrap_or(kind.name())
        .to_string();
    if let Err(e) = enter_with(p, kind, &name) {
        eprintln!("micro-vmm: cannot sandbox thread {name}: {e}");
        // SAFETY: _exit ends the process at once; nothing is left half-done that must run.
        // 1 is the VMM's "other error" exit code.
        unsafe { libc::_exit(1) };
    }
    hooks.run();
}

fn enter_with(p: &Prepared, kind: ThreadKind, name: &str) -> Result<(), SandboxError> {
    if let Some(c) = p.credentials {
        drop_credentials(c)?;
    }
    if let Some(r) = &p.ruleset {
        landlock::restrict(r)?;
    }
    trap::set_thread_name(name);
    seccompiler::apply_filter(&p.filters[kind.index()])
        .map_err(|e| SandboxError::Seccomp(format!("install for {name}: {e}")))
}

/// Drops this thread's credentials with raw system calls (glibc's wrappers would signal
/// every thread of the process, some of them sandboxed already).
fn drop_credentials(c: Credentials) -> Result<(), SandboxError> {
    let fail = |source| SandboxError::Credentials {
        uid: c.uid,
        gid: c.gid,
        source,
    };
    let gid = libc::c_long::from(c.gid);
    let uid = libc::c_long::from(c.uid);
    let groups = [c.gid];
    // SAFETY: raw setgroups/setresgid/setresuid on this thread; `groups` outlives the call.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
        {
            return Err(fail(std::io::Error::last_os_error()));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Gives `path` (and, for a directory, everything beneath it) to `c`. Symlinks are not
/// followed.
/// Whether `c` may create and remove entries in a directory with `meta` (its permission bits
/// for that user: owner, else group, else others; root may always).
fn writable_by(meta: &std::fs::Metadata, c: Credentials) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if c.uid == 0 {
        true
    } else if meta.uid() == c.uid {
        mode & 0o300 == 0o300
    } else if meta.gid() == c.gid {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    }
}

/// The uid the process drops to (`--uid`), once the sandbox is prepared.
pub fn drop_uid() -> Option<u32> {
    PREPARED.get()?.credentials.map(|c| c.uid)
}

fn chown_tree(path: &std::path::Path, c: Credentials) -> Result<(), SandboxError> {
    let fail = |source| SandboxError::Chown {
        path: path.to_owned(),
        uid: c.uid,
        source,
    };
    std::os::unix::fs::lchown(path, Some(c.uid), Some(c.gid)).map_err(fail)?;
    let md = std::fs::symlink_metadata(path).map_err(fail)?;
    if md.is_dir() {
        for entry in std::fs::read_dir(path).map_err(fail)? {
            chown_tree(&entry.map_err(fail)?.path(), c)?;
        }
    }
    Ok(())
}

/// The debug-build test hooks (tests/sandbox.rs); release builds ignore the variables.
struct TestHooks {
    forbidden: bool,
    open: Option<PathBuf>,
}

impl TestHooks {
    fn read(kind: ThreadKind) -> TestHooks {
        if !cfg!(debug_assertions) {
            return TestHooks {
                forbidden: false,
                open: None,
            };
        }
        TestHooks {
            forbidden: std::env::var_os(TEST_FORBIDDEN_SYSCALL_ENV)
                .is_some_and(|v| v == kind.name()),
            open: (kind == ThreadKind::Main)
                .then(|| std::env::var_os(TEST_OPEN_ENV).map(PathBuf::from))
                .flatten(),
        }
    }

    fn run(self) {
        if let Some(p) = self.open {
            match std::fs::File::open(&p) {
                Ok(_) => eprintln!("micro-vmm: sandbox test: opened {}", p.display()),
                Err(e) => eprintln!("micro-vmm: sandbox test: cannot open {}: {e}", p.display()),
            }
        }
        if self.forbidden {
            // SAFETY: getppid has no side effects; no thread kind may call it.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    }
}
