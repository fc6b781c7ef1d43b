//! Host input for the console: a thread that reads the host fd only while the guest's receive
//! FIFO has room, so a flood of input waits in the host pipe instead of in our memory.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::device::{InputWaker, SerialDevice};

/// Largest read from the host at once (the FIFO holds 64 bytes).
const READ_CHUNK: usize = 64;

/// Starts the input thread for `fd` (usually 0). It ends at EOF or on a read error; the VMM
/// does not wait for it at exit (it may be blocked in `read`).
pub fn spawn_input_thread(
    fd: RawFd,
    serial: Arc<Mutex<SerialDevice>>,
    waker: InputWaker,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("console-in".into())
        .stack_size(64 << 10)
        .spawn(move || {
            crate::sandbox::enter(crate::sandbox::ThreadKind::ConsoleIn);
            input_loop(fd, &serial, &waker)
        })
}

fn input_loop(fd: RawFd, serial: &Mutex<SerialDevice>, waker: &InputWaker) {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let room = {
            let mut dev = serial.lock().unwrap_or_else(PoisonError::into_inner);
            while dev.fifo_capacity() == 0 {
                dev = waker.0.wait(dev).unwrap_or_else(PoisonError::into_inner);
            }
            dev.fifo_capacity()
        };
        let n = match read_fd(fd, &mut buf[..room.min(READ_CHUNK)]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("console input stopped: {e}");
                return;
            }
        };
        let mut pending = &buf[..n];
        while !pending.is_empty() {
            let mut dev = serial.lock().unwrap_or_else(PoisonError::into_inner);
            let taken = dev.enqueue(pending);
            pending = &pending[taken..];
            if taken == 0 {
                // The FIFO filled up again (or the UART is in loopback mode): wait, keeping
                // the bytes, until the guest reads.
                let _ = waker
                    .0
                    .wait_timeout(dev, Duration::from_millis(50))
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::serial::output::OutputSink;
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;
    use vmm_sys_util::eventfd::EventFd;

    fn pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe {
            (
                OwnedFd::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn input_flows_as_the_guest_reads_and_nothing_is_lost() {
        let (rd, mut wr) = pipe();
        let waker = InputWaker::default();
        let dev = Arc::new(Mutex::new(SerialDevice::new(
            "t",
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            waker.clone(),
            OutputSink::discard(),
        )));
        let t = spawn_input_thread(rd.as_raw_fd(), dev.clone(), waker).unwrap();
        let sent: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let data = sent.clone();
        let writer = thread::spawn(move || {
            wr.write_all(&data).unwrap();
        });
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < sent.len() && Instant::now() < deadline {
            let mut lsr = [0u8];
            let mut d = dev.lock().unwrap();
            d.read(5, &mut lsr);
            if lsr[0] & 1 == 1 {
                let mut b = [0u8];
                d.read(0, &mut b);
                got.push(b[0]);
            } else {
                drop(d);
                thread::sleep(Duration::from_millis(1));
            }
        }
        writer.join().unwrap();
        assert_eq!(got, sent);
        // The writer closed the pipe: the thread sees EOF and ends before `rd` is closed.
        t.join().unwrap();
        drop(rd);
    }
}
