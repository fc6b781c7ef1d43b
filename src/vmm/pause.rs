//! Pausing and resuming every vCPU while the devices keep running.
//!
//! [`PauseControl::pause`] sets the flag and kicks each vCPU thread with the kick signal
//! (whose handler sets `immediate_exit`, so a thread about to enter KVM_RUN returns at once
//! too); each vCPU thread then parks in [`PauseControl::park_if_paused`] on a condvar. A pause
//! completes when every running vCPU thread is parked. A VM that stops while paused wakes the
//! parked threads ([`PauseControl::release`]) so they can leave.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::signals;

#[derive(Default)]
struct State {
    paused: bool,
    /// Set when the VM stops: nobody parks any more.
    released: bool,
    /// The running vCPU threads (pthread ids), for the kick.
    threads: Vec<libc::pthread_t>,
    parked: usize,
}

/// Why a pause did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    #[error("the VM is stopping")]
    Stopping,
    #[error("the vCPUs did not stop within {0:?}")]
    Timeout(Duration),
    #[error("resumed before every vCPU had stopped")]
    Resumed,
}

/// Shared by the vCPU threads and whoever pauses them (the control socket).
#[derive(Default)]
pub struct PauseControl {
    state: Mutex<State>,
    /// Signalled when `paused` or `released` changes (for parked vCPUs) and when a vCPU parks
    /// (for the pauser).
    changed: Condvar,
}

impl PauseControl {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by each vCPU thread when it starts; it is kicked from then on.
    pub fn register_current_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lock().threads.push(me);
    }

    /// Called by each vCPU thread before it returns: it is never kicked again (its pthread id
    /// stops being valid once the thread is joined).
    pub fn unregister_current_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let mut s = self.lock();
        // SAFETY: pthread_equal only compares two thread ids.
        s.threads
            .retain(|t| unsafe { libc::pthread_equal(*t, me) } == 0);
        self.changed.notify_all();
    }

    /// Called by a vCPU thread between two KVM_RUNs: waits while the VM is paused, calling
    /// `on_wake` (without the lock) each time it is woken, for requests a parked vCPU still
    /// answers (the state dump).
    pub fn park_if_paused(&self, mut on_wake: impl FnMut()) {
        let mut s = self.lock();
        if !s.paused || s.released {
            return;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !s.released {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
            drop(s);
            on_wake();
            s = self.lock();
        }
        s.parked -= 1;
    }

    /// Kicks every running vCPU thread out of KVM_RUN once and wakes the parked ones (they
    /// stay paused); each then looks for requests such as a state dump.
    pub fn kick_all(&self) {
        kick(&self.lock().threads);
        self.changed.notify_all();
    }

    /// Pauses every vCPU; returns once all of them have left KVM_RUN and wait (at most
    /// `timeout`). Idempotent. On a timeout the VM stays paused (the late vCPUs park when
    /// they leave KVM_RUN).
    pub fn pause(&self, timeout: Duration) -> Result<(), PauseError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        if s.released {
            return Err(PauseError::Stopping);
        }
        s.paused = true;
        loop {
            if s.released {
                return Err(PauseError::Stopping);
            }
            if !s.paused {
                return Err(PauseError::Resumed);
            }
            if s.parked >= s.threads.len() {
                return Ok(());
            }
            kick(&s.threads);
            let now = Instant::now();
            if now >= deadline {
                return Err(PauseError::Timeout(timeout));
            }
            // Re-kick now and then: a signal can land just before a thread checks the flag.
            let wait = (deadline - now).min(Duration::from_millis(20));
            s = self
                .changed
                .wait_timeout(s, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Lets the vCPUs run again. Idempotent.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    /// True while paused (requested; the vCPUs may still be on their way to park).
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// The VM is stopping: parked vCPUs leave, later pauses fail.
    pub fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }
}

/// Sends the kick signal to `threads`, taken from [`State::threads`] under the lock.
fn kick(threads: &[libc::pthread_t]) {
    for t in threads {
        // SAFETY: every id in `threads` belongs to a live vCPU thread: threads remove
        // themselves (under the lock the caller holds) before they return, and are joined only
        // after.
        unsafe { libc::pthread_kill(*t, signals::kick_signal()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Fake vCPU threads that count loop iterations between parks.
    fn spawn(
        pc: &Arc<PauseControl>,
        n: usize,
        stop: &Arc<AtomicBool>,
        count: &Arc<AtomicU64>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let _ = vmm_sys_util::signal::register_signal_handler(
            signals::kick_signal(),
            crate::vmm::vcpu::kick_handler,
        );
        (0..n)
            .map(|_| {
                let (pc, stop, count) = (pc.clone(), stop.clone(), count.clone());
                std::thread::spawn(move || {
                    pc.register_current_thread();
                    while !stop.load(Ordering::SeqCst) {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(100));
                        pc.park_if_paused(|| {});
                    }
                    pc.unregister_current_thread();
                })
            })
            .collect()
    }

    #[test]
    fn pause_parks_every_thread_and_resume_lets_them_go_on() {
        let pc = Arc::new(PauseControl::new());
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let threads = spawn(&pc, 3, &stop, &count);
        while pc.lock().threads.len() < 3 {
            std::thread::yield_now();
        }
        pc.pause(Duration::from_secs(5)).unwrap();
        pc.pause(Duration::from_secs(5)).unwrap(); // idempotent
        assert!(pc.is_paused());
        let frozen = count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(count.load(Ordering::SeqCst), frozen);
        pc.resume();
        std::thread::sleep(Duration::from_millis(30));
        assert!(count.load(Ordering::SeqCst) > frozen);
        // Stopping while paused: the parked threads leave.
        pc.pause(Duration::from_secs(5)).unwrap();
        stop.store(true, Ordering::SeqCst);
        pc.release();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(pc.pause(Duration::from_secs(1)), Err(PauseError::Stopping));
    }

    #[test]
    fn a_thread_that_never_parks_is_a_timeout() {
        let pc = PauseControl::new();
        pc.register_current_thread(); // this test thread: never parks
        let _ = vmm_sys_util::signal::register_signal_handler(
            signals::kick_signal(),
            crate::vmm::vcpu::kick_handler,
        );
        let t0 = Instant::now();
        assert_eq!(
            pc.pause(Duration::from_millis(50)),
            Err(PauseError::Timeout(Duration::from_millis(50)))
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // A resume while a pause waits ends that pause.
        pc.resume();
        let pc = Arc::new(pc);
        let waiter = {
            let pc = Arc::clone(&pc);
            std::thread::spawn(move || pc.pause(Duration::from_secs(10)))
        };
        while !pc.is_paused() {
            std::thread::yield_now();
        }
        pc.resume();
        assert_eq!(waiter.join().unwrap(), Err(PauseError::Resumed));
        pc.unregister_current_thread();
        // With no vCPU threads at all a pause is immediate.
        pc.pause(Duration::from_millis(1)).unwrap();
    }
}
