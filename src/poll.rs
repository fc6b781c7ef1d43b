//! poll(2) for the threads that wait on several descriptors with a deadline (the lifecycle
//! service, the control server).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// A pollfd asking for `events` on `fd`.
pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2), retried on EINTR; `None` waits without a timeout. The timeout is rounded up to
/// the next millisecond, so a deadline 0.4 ms away does not spin with a 0 ms timeout.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    });
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn ready_and_timeout() {
        let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&e);
        let mut fds = [pollfd(fd, libc::POLLIN)];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        let t = Instant::now();
        assert_eq!(
            poll(&mut fds, Some(Duration::from_micros(1500))).unwrap(),
            0
        );
        assert!(t.elapsed() >= Duration::from_millis(1));
        e.write(1).unwrap();
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
    }
}
