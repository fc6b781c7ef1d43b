//! The SIGSYS handler for seccomp violations: one line naming the thread and the system
//! call on stderr, then `_exit(EXIT_SECCOMP)`. Async-signal-safe: a thread-local byte array,
//! stack buffers, write(2) and _exit(2) only.

use std::cell::Cell;

use super::syscall_names;

/// The exit code of a process killed for a forbidden system call: 128 + SIGSYS (31), what a
/// shell reports for a SIGSYS death (docs/design.md, exit codes).
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

const NAME_LEN: usize = 16;

thread_local! {
    /// This thread's name, set before its filter is installed (const-initialised, no
    /// destructor: reading it in a signal handler allocates nothing).
    static NAME: Cell<[u8; NAME_LEN]> = const { Cell::new([0; NAME_LEN]) };
}

/// Records the calling thread's name for the handler.
pub(super) fn set_thread_name(name: &str) {
    let mut buf = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    NAME.with(|c| c.set(buf));
}

/// Installs the handler process-wide.
pub(super) fn install() -> std::io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid empty value that is filled below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act.sa_mask` is a valid sigset_t owned by `act`.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: `act` is initialised; the handler only calls async-signal-safe functions.
    if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A fixed-size line being put together without allocating.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The message for a forbidden call `nr` by thread `name`.
fn message(name: &[u8], nr: i64) -> Line {
    let mut l = Line {
        buf: [0; 160],
        len: 0,
    };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    l.push(b"micro-vmm: seccomp: thread ");
    l.push(if name_len == 0 {
        b"?"
    } else {
        &name[..name_len]
    });
    l.push(b" made forbidden syscall ");
    l.push_num(nr as u64);
    l.push(b" (");
    l.push(syscall_names::name(nr).unwrap_or("unknown").as_bytes());
    l.push(b")\n");
    l
}

/// The system call number in a SIGSYS siginfo (`si_syscall`, after the three-int header
/// padded to 8 bytes and `si_call_addr`).
fn syscall_nr(info: *const libc::siginfo_t) -> i64 {
    const SI_SYSCALL_OFFSET: usize = 16 + std::mem::size_of::<usize>();
    // SAFETY: the kernel passed a full siginfo_t for SIGSYS (SA_SIGINFO), which is 128
    // bytes; the int at this offset is `si_syscall`.
    i64::from(unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    })
}

extern "C" fn handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let name = NAME.with(Cell::get);
    let l = message(&name, syscall_nr(info));
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is on this stack.
    unsafe {
        libc::write(libc::STDERR_FILENO, l.buf.as_ptr().cast(), l.len);
        libc::_exit(EXIT_SECCOMP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_thread_and_call() {
        let mut name = [0u8; NAME_LEN];
        name[..5].copy_from_slice(b"vcpu0");
        let l = message(&name, 59);
        assert_eq!(
            std::str::from_utf8(&l.buf[..l.len]).unwrap(),
            "micro-vmm: seccomp: thread vcpu0 made forbidden syscall 59 (execve)\n"
        );
        let l = message(&[0; NAME_LEN], 100_000);
        assert_eq!(
            std::str::from_utf8(&l.buf[..l.len]).unwrap(),
            "micro-vmm: seccomp: thread ? made forbidden syscall 100000 (unknown)\n"
        );
    }

    #[test]
    fn long_names_are_cut() {
        let l = message(&[b'x'; NAME_LEN], 0);
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(s.contains(&format!("thread {} made", "x".repeat(NAME_LEN))));
    }
}
