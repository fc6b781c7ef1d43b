//! The seccomp allowlists, one function per thread kind (docs/security.md lists them in
//! words). Anything not allowed traps (SIGSYS): the handler in [`super::trap`] names the
//! thread and the system call and ends the process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::{SandboxError, ThreadKind};

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

const KVMIO: u32 = 0xae;
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
// The state dump (crate::vmm::dump): a vCPU reads its own state, the dumper the irqchip.
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_bindings::kvm_lapic_state);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
vmm_sys_util::ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);
vmm_sys_util::ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_bindings::kvm_irqchip);

/// The compiled filter for `kind`.
pub(super) fn compile(kind: ThreadKind, kick_signal: i32) -> Result<BpfProgram, SandboxError> {
    let rules = rules(kind, kick_signal)?;
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| SandboxError::Seccomp(format!("{e:?}")))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|e| SandboxError::Seccomp(format!("{kind:?}: {e}")))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Seccomp(format!("{kind:?}: {e}")))
}

/// The allowlist of one thread kind.
pub(super) fn rules(kind: ThreadKind, kick: i32) -> Result<Rules, SandboxError> {
    let mut r = Rules::new();
    common(&mut r)?;
    match kind {
        ThreadKind::Main => main(&mut r, kick)?,
        ThreadKind::Vcpu => vcpu(&mut r)?,
        ThreadKind::Devices => devices(&mut r)?,
        ThreadKind::Output => output(&mut r),
        ThreadKind::ConsoleIn => console_in(&mut r),
        ThreadKind::Lifecycle => lifecycle(&mut r)?,
        ThreadKind::Control => control(&mut r, kick)?,
        ThreadKind::ControlHelper => control_helper(&mut r, kick)?,
    }
    Ok(r)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// Allows `nrs` whatever their arguments.
fn allow(r: &mut Rules, nrs: &[libc::c_long]) {
    for &nr in nrs {
        r.insert(nr, Vec::new());
    }
}

/// Allows `nr` when argument `arg` is one of `values` (added to what is allowed already).
fn allow_arg(r: &mut Rules, nr: libc::c_long, arg: u8, values: &[u64]) -> Result<(), SandboxError> {
    if r.get(&nr).is_some_and(Vec::is_empty) {
        return Ok(()); // already allowed unconditionally
    }
    let entry = r.entry(nr).or_default();
    for &v in values {
        entry.push(rule(vec![cond(arg, SeccompCmpOp::Eq, v)?])?);
    }
    Ok(())
}

/// What every thread needs: memory (never executable), locks, time, signals, its own end,
/// stderr for its messages, closing its descriptors.
fn common(r: &mut Rules) -> Result<(), SandboxError> {
    allow(
        r,
        &[
            libc::SYS_futex,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_madvise,
            libc::SYS_brk,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_sched_yield,
            libc::SYS_getrandom,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_restart_syscall,
        ],
    );
    // mmap and mprotect, but never PROT_EXEC: no new code in a compromised process.
    let no_exec = |r: &mut Rules, nr| -> Result<(), SandboxError> {
        r.insert(
            nr,
            vec![rule(vec![cond(
                2,
                SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
                0,
            )?])?],
        );
        Ok(())
    };
    no_exec(r, libc::SYS_mmap)?;
    no_exec(r, libc::SYS_mprotect)?;
    // Descriptor flags (std checks a descriptor before closing it in debug builds, sets
    // O_NONBLOCK, duplicates with CLOEXEC).
    allow_arg(
        r,
        libc::SYS_fcntl,
        1,
        &[
            libc::F_GETFD as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
            libc::F_DUPFD_CLOEXEC as u64,
        ],
    )?;
    // abort() on a panic raises SIGABRT at its own thread.
    allow_arg(r, libc::SYS_tgkill, 2, &[libc::SIGABRT as u64])?;
    // glibc's malloc, the first time it shrinks a thread's heap, reads
    // /proc/sys/vm/overcommit_memory: openat(O_RDONLY|O_CLOEXEC) and read, at any moment in
    // any thread (seen killing the device thread after a 64 MiB vsock transfer). Read-only
    // opens only; landlock still limits which paths open.
    allow_arg(
        r,
        libc::SYS_openat,
        2,
        &[(libc::O_RDONLY | libc::O_CLOEXEC) as u64],
    )?;
    allow(r, &[libc::SYS_read]);
    Ok(())
}

/// Unix sockets only.
fn unix_sockets(r: &mut Rules) -> Result<(), SandboxError> {
    allow_arg(r, libc::SYS_socket, 0, &[libc::AF_UNIX as u64])?;
    allow_arg(r, libc::SYS_socketpair, 0, &[libc::AF_UNIX as u64])?;
    Ok(())
}

/// Serving non-blocking Unix sockets: poll, accept, read and write, options, shutdown.
fn socket_io(r: &mut Rules) -> Result<(), SandboxError> {
    // std's set_nonblocking.
    allow_arg(r, libc::SYS_ioctl, 1, &[libc::FIONBIO])?;
    allow(
        r,
        &[
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_accept4,
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_shutdown,
        ],
    );
    Ok(())
}

/// Removing a socket file it bound, if it is still its own (stat, then unlink).
fn remove_own_socket(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
        ],
    );
}

/// Starting a thread that then enters its own sandbox (the control server's helpers).
fn spawn_sandboxed_thread(r: &mut Rules) -> Result<(), SandboxError> {
    allow(
        r,
        &[
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_getaffinity,
            libc::SYS_seccomp,
            libc::SYS_landlock_restrict_self,
            libc::SYS_setresuid,
            libc::SYS_setresgid,
            libc::SYS_setgroups,
        ],
    );
    allow_arg(
        r,
        libc::SYS_prctl,
        0,
        &[
            libc::PR_SET_NAME as u64,
            libc::PR_SET_NO_NEW_PRIVS as u64,
            libc::PR_GET_NO_NEW_PRIVS as u64,
        ],
    )
}

/// The main thread once the VM runs: waits for the end (poll on the exit eventfd and the
/// signalfd), kicks vCPUs, restores the terminal, joins the others, then reads the log
/// port's capture, writes `--log`, removes the work directory and socket files.
fn main(r: &mut Rules, kick: i32) -> Result<(), SandboxError> {
    allow(
        r,
        &[
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_openat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_lseek,
            libc::SYS_getdents64,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rmdir,
            libc::SYS_copy_file_range,
            libc::SYS_sendfile,
            libc::SYS_splice,
            libc::SYS_ftruncate,
            libc::SYS_fsync,
            libc::SYS_shutdown,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
        ],
    );
    allow_arg(r, libc::SYS_tgkill, 2, &[kick as u64])?;
    allow_arg(
        r,
        libc::SYS_ioctl,
        1,
        &[libc::TCGETS, libc::TCSETS, libc::TCSETSW, libc::TCSETSF],
    )?;
    dumper(r)
}

/// A vCPU: KVM_RUN and KVM_GET_REGS on its own fd (the in-kernel irqchip does the rest);
/// eventfd writes (irqfds, the exit eventfd) are `write`.
fn vcpu(r: &mut Rules) -> Result<(), SandboxError> {
    allow_arg(
        r,
        libc::SYS_ioctl,
        1,
        &[
            u64::from(KVM_RUN() as u32),
            u64::from(KVM_GET_REGS() as u32),
            u64::from(KVM_GET_SREGS() as u32),
            u64::from(KVM_GET_LAPIC() as u32),
            u64::from(KVM_GET_MP_STATE() as u32),
            u64::from(KVM_GET_VCPU_EVENTS() as u32),
        ],
    )
}

/// Collecting the state dump (SIGUSR1 on the main thread, `dump` on a control helper): the
/// irqchip read on the VM fd; the vCPUs are kicked with the kick signal.
fn dumper(r: &mut Rules) -> Result<(), SandboxError> {
    allow_arg(
        r,
        libc::SYS_ioctl,
        1,
        &[u64::from(KVM_GET_IRQCHIP() as u32)],
    )
}

/// The device thread: epoll, virtqueue eventfds, disk I/O on open files, and the vsock
/// muxer's Unix sockets (connects to `PATH_P`, accepts on `PATH`).
fn devices(r: &mut Rules) -> Result<(), SandboxError> {
    socket_io(r)?;
    remove_own_socket(r);
    allow(
        r,
        &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_connect,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_preadv2,
            libc::SYS_pwritev2,
            libc::SYS_lseek,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_fallocate,
            libc::SYS_eventfd2,
            libc::SYS_timerfd_create,
            libc::SYS_timerfd_settime,
        ],
    );
    unix_sockets(r)
}

/// An output thread: writes to its one host file.
fn output(r: &mut Rules) {
    allow(r, &[libc::SYS_writev, libc::SYS_fsync]);
}

/// Console input: reads stdin.
fn console_in(r: &mut Rules) {
    allow(r, &[libc::SYS_read, libc::SYS_poll, libc::SYS_ppoll]);
}

/// The lifecycle service: one listener and one connection, poll.
fn lifecycle(r: &mut Rules) -> Result<(), SandboxError> {
    socket_io(r)?;
    remove_own_socket(r);
    Ok(())
}

/// The control server: its listener and clients, fd passing, and starting helper threads.
fn control(r: &mut Rules, kick: i32) -> Result<(), SandboxError> {
    socket_io(r)?;
    remove_own_socket(r);
    spawn_sandboxed_thread(r)?;
    // What the helpers do must pass this filter too (they inherit it).
    control_helper(r, kick)
}

/// A control helper: a pause (kicks the vCPUs, waits), one vsock connect handshake, or one
/// state dump.
fn control_helper(r: &mut Rules, kick: i32) -> Result<(), SandboxError> {
    socket_io(r)?;
    allow(r, &[libc::SYS_connect]);
    allow_arg(r, libc::SYS_tgkill, 2, &[kick as u64])?;
    dumper(r)?;
    unix_sockets(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kick() -> i32 {
        vmm_sys_util::signal::SIGRTMIN()
    }

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            let prog = compile(kind, kick()).unwrap();
            assert!(!prog.is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn the_kinds_differ_where_they_should() {
        let has = |kind, nr| rules(kind, kick()).unwrap().contains_key(&nr);
        // Only the main thread opens files freely (the others only read-only, for glibc's
        // malloc); only the control server starts threads.
        for kind in ThreadKind::ALL {
            let open_rules = rules(kind, kick()).unwrap()[&libc::SYS_openat].len();
            assert_eq!(open_rules == 0, kind == ThreadKind::Main, "{kind:?}");
            assert_eq!(
                has(kind, libc::SYS_clone3),
                kind == ThreadKind::Control,
                "{kind:?}"
            );
            assert!(!has(kind, libc::SYS_execve), "{kind:?}");
            assert!(!has(kind, libc::SYS_ptrace), "{kind:?}");
        }
        assert!(has(ThreadKind::Vcpu, libc::SYS_ioctl));
        assert!(!has(ThreadKind::Vcpu, libc::SYS_socket));
    }

    #[test]
    fn vcpu_ioctls_are_checked_by_request() {
        let r = rules(ThreadKind::Vcpu, kick()).unwrap();
        assert_eq!(r[&libc::SYS_ioctl].len(), 6);
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
    }
}
