//! The device thread: one event-manager loop that serves every virtio device's queue events,
//! so vCPU threads only ever do register accesses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Ends the loop when its eventfd is written.
struct Stopper {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for Stopper {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            log::error!("event loop: cannot watch the stop eventfd: {e:?}");
        }
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.evt.read();
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A running device thread.
pub struct EventLoop {
    stop_evt: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts the thread with `subscribers` registered.
    pub fn start(subscribers: Vec<Subscriber>) -> std::io::Result<EventLoop> {
        let stop_evt = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut mgr: EventManager<Subscriber> =
            EventManager::new().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        mgr.add_subscriber(Arc::new(Mutex::new(Stopper {
            evt: stop_evt.try_clone()?,
            stop: stop.clone(),
        })));
        for s in subscribers {
            mgr.add_subscriber(s);
        }
        let thread = std::thread::Builder::new()
            .name("devices".into())
            .stack_size(256 << 10)
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::ThreadKind::Devices);
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = mgr.run() {
                        log::error!("device event loop failed: {e:?}");
                        break;
                    }
                }
            })?;
        Ok(EventLoop {
            stop_evt,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        let _ = self.stop_evt.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
