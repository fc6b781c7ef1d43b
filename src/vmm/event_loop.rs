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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::{Block, SIZE_MAX};
    use crate::devices::virtio::{ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
    use crate::disk::{DiskBackend, DiskError};
    use crate::vmm::memory::GuestMemoryMmap;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};
    use virtio_queue::Queue;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    /// A 1 TiB disk whose reads take `delay` each (and return zeros).
    struct SlowDisk {
        delay: Duration,
        reads: Arc<AtomicUsize>,
    }

    impl DiskBackend for SlowDisk {
        fn len(&self) -> u64 {
            1 << 40
        }
        fn is_writable(&self) -> bool {
            false
        }
        fn read_exact_at(&self, buf: &mut [u8], _: u64) -> Result<(), DiskError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            buf.fill(0);
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> Result<(), DiskError> {
            unreachable!("read-only")
        }
        fn flush(&self) -> Result<(), DiskError> {
            Ok(())
        }
        fn id(&self) -> [u8; 20] {
            [0; 20]
        }
    }

    const HDR: u64 = 0x4000;
    const STATUS: u64 = 0x5000;
    const DATA: u64 = 0x10_0000;
    /// Three-descriptor requests that fit a 256-entry ring.
    const QUEUED: u16 = 85;

    /// A device thread serving one block device whose ring is full of reads of `len` bytes
    /// each, from a disk that takes `delay` per read.
    struct Loaded {
        l: EventLoop,
        reads: Arc<AtomicUsize>,
        mem: GuestMemoryMmap,
        used_ring: GuestAddress,
    }

    impl Loaded {
        /// The used ring's index (read directly: a new MockSplitQueue would zero it).
        fn used(&self) -> u16 {
            self.mem.read_obj(self.used_ring.unchecked_add(2)).unwrap()
        }
    }

    fn loaded_device(len: u32, delay: Duration) -> Loaded {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mut h = [0u8; 16]; // VIRTIO_BLK_T_IN, sector 0
        h[8] = 0;
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 256);
        let descs: Vec<RawDescriptor> = (0..QUEUED)
            .flat_map(|i| {
                let b = i * 3;
                [
                    Descriptor::new(HDR, 16, 1, b + 1),
                    Descriptor::new(DATA, len, 1 | 2, b + 2),
                    Descriptor::new(STATUS, 1, 2, 0),
                ]
            })
            .map(RawDescriptor::from)
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        let q: Queue = vq.create_queue().unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let disk = SlowDisk {
            delay,
            reads: reads.clone(),
        };
        let mut block = Block::new("vdt".into(), Box::new(disk)).unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        block
            .activate(ActivateContext {
                mem: mem.clone(),
                interrupt: irq,
                queues: vec![q],
                acked_features: VIRTIO_F_VERSION_1,
            })
            .unwrap();
        let used_ring = vq.used_addr();
        let l = EventLoop::start(vec![Arc::new(Mutex::new(block))]).unwrap();
        Loaded {
            l,
            reads,
            mem,
            used_ring,
        }
    }

    #[test]
    fn the_device_thread_stops_within_a_second_with_a_full_ring_of_slow_requests() {
        // 85 requests of 50 ms each: over 4 s of work queued.
        let d = loaded_device(SIZE_MAX, Duration::from_millis(50));
        let reads = d.reads.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            reads.load(Ordering::SeqCst) > 0,
            "the device thread never started"
        );
        let t = Instant::now();
        let used = d.used();
        assert!(used < QUEUED, "everything was served before the stop");
        d.l.stop();
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
    }

    #[test]
    fn a_full_ring_of_1_gib_requests_is_refused_without_disk_reads() {
        let d = loaded_device(1 << 30, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.used() < QUEUED && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(d.used(), QUEUED);
        assert_eq!(d.reads.load(Ordering::SeqCst), 0);
        let status: u8 = d.mem.read_obj(GuestAddress(STATUS)).unwrap();
        let t = Instant::now();
        d.l.stop();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(status, crate::devices::virtio::block::status::IOERR);
    }
}
