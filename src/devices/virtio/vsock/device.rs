//! The virtio-vsock device: three queues (RX, TX, event), the guest CID in config space, and
//! the muxer that relays to host Unix sockets.
//!
//! TX chains are parsed with virtio-vsock's `VsockPacket` (header in the first descriptor,
//! data in the same one or the next; `len` at most 64 KiB) and handed to the muxer; a chain
//! that does not parse is returned unused. RX buffers are filled only when something is owed
//! to the guest: RSTs for stray packets first, then connections round-robin. When the guest
//! has no RX buffer the device waits for the RX queue notification. The event queue is never
//! used (no transport resets: connections do not outlive the VM).
//!
//! `activate` and `reset` run on a vCPU thread (through the transport) without access to
//! epoll, so they only record what happened and kick the TX eventfd; the event-loop thread
//! does the rest. A queue that cannot be walked (corrupt ring indices) marks the device
//! broken, as for virtio-blk.

use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::eventfd::EventFd;

use super::muxer::{EV_CONN_BASE, EV_LISTENER, EV_RX, EV_TIMER, EV_TX, Muxer};
use super::packet::Header;
use super::{MAX_PKT_DATA, NUM_QUEUES, QUEUE_SIZE, RXQ, TXQ, VIRTIO_ID_VSOCK, VsockError};
use crate::devices::virtio::descriptors::{ChainError, Segment, read_chain};
use crate::devices::virtio::interrupt::{INT_CONFIG, INT_USED_RING};
use crate::devices::virtio::{
    ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, VirtioError,
};
use crate::log_limit::LogLimit;
use crate::vmm::memory::GuestMemoryMmap;
use vm_memory::GuestAddress;

static BAD_CHAIN: LogLimit = LogLimit::new();
static BAD_CONFIG: LogLimit = LogLimit::new();
/// A driver can break its queues, reset the device and break them again.
static BROKEN_QUEUE: LogLimit = LogLimit::new();
static KICK_FAILED: LogLimit = LogLimit::new();

/// What exists only between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    /// Held so the driver's event buffers stay untouched.
    _evq: Queue,
    interrupt: Arc<Interrupt>,
    /// Scratch for [`refuses_indirect`]'s walk of each chain.
    segments: Vec<Segment>,
}

static INDIRECT_CHAIN: LogLimit = LogLimit::new();

/// Whether the chain at `head` must be refused before virtio-vsock parses it: virtio-queue's
/// chain iterator follows indirect tables, but this device does not offer
/// VIRTIO_RING_F_INDIRECT_DESC (the transport refuses a driver that sets it), so a chain that
/// uses one is the driver's error. (A driver that sets the flag after this walk only changes
/// what its own packet says: the iterator's reads stay inside guest memory.)
fn refuses_indirect(
    mem: &GuestMemoryMmap,
    q: &Queue,
    head: u16,
    segments: &mut Vec<Segment>,
) -> bool {
    match read_chain(mem, GuestAddress(q.desc_table()), q.size(), head, segments) {
        Err(e @ ChainError::Indirect(_)) => {
            if let Some(n) = INDIRECT_CHAIN.hit() {
                log::warn!("vsock: chain refused ({n}x): {e}");
            }
            true
        }
        // Other faults are virtio-vsock's to report, as before.
        _ => false,
    }
}

pub struct Vsock {
    guest_cid: u64,
    config: [u8; 8],
    queue_evts: [EventFd; NUM_QUEUES],
    active: Option<Active>,
    broken: bool,
    /// The driver reset the device; the event loop drops the connections.
    reset_pending: bool,
    pub(super) muxer: Muxer,
}

impl Vsock {
    /// A vsock device for a guest with CID `guest_cid`, listening at `uds_path` (a stale
    /// socket file there is replaced; a live one is an error). The socket file is removed
    /// when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let evt = || {
            EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VsockError::Host {
                what: "queue eventfd",
                source,
            })
        };
        let queue_evts = [evt()?, evt()?, evt()?];
        Ok(Vsock {
            guest_cid,
            config: guest_cid.to_le_bytes(),
            queue_evts,
            active: None,
            broken: false,
            reset_pending: false,
            muxer: Muxer::new(guest_cid, uds_path)?,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// Open connections of all kinds (handshakes and closing ones included).
    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }

    /// Guest bytes waiting for host sockets, over all connections.
    pub fn buffered(&self) -> usize {
        self.muxer.buffered()
    }

    pub(super) fn queue_event(&self, index: usize) -> &EventFd {
        &self.queue_evts[index]
    }

    /// Wakes the event loop to look at the queues.
    fn kick(&self) {
        if let Err(e) = self.queue_evts[TXQ].write(1)
            && let Some(n) = KICK_FAILED.hit()
        {
            log::warn!("vsock: cannot wake the event loop ({n}x): {e}");
        }
    }

    /// One event of the device's subscription (see `muxer::EV_*`).
    pub(super) fn handle_event(&mut self, events: Events, ops: &mut EventOps) {
        if self.reset_pending {
            self.muxer.reset(ops);
            self.reset_pending = false;
        }
        match events.data() {
            EV_RX => {
                let _ = self.queue_evts[RXQ].read();
            }
            EV_TX => {
                let _ = self.queue_evts[TXQ].read();
            }
            EV_LISTENER => self.muxer.handle_listener(ops),
            EV_TIMER => self.muxer.handle_timer(ops),
            d if d >= EV_CONN_BASE => self.muxer.handle_conn_event(
                (d - EV_CONN_BASE) as usize,
                events.fd(),
                events.event_set(),
                ops,
            ),
            _ => {}
        }
        self.process_queues(ops);
    }

    /// TX first (it creates RX work), then RX; once more if RX made room for RSTs that TX was
    /// waiting for.
    pub(super) fn process_queues(&mut self, ops: &mut EventOps) {
        for _ in 0..2 {
            let stalled = self.process_tx(ops);
            self.process_rx(ops);
            if !stalled || self.muxer.tx_blocked() {
                break;
            }
        }
    }

    fn fail(&mut self, e: virtio_queue::Error) {
        if let Some(n) = BROKEN_QUEUE.hit() {
            log::warn!("vsock: queue is broken, device needs a reset ({n}x): {e}");
        }
        self.broken = true;
        if let Some(a) = &self.active {
            a.interrupt.trigger(INT_CONFIG);
        }
    }

    /// After a pass over a queue: interrupts the guest if buffers were used, and marks the
    /// device broken if the queue was.
    fn end_pass(&mut self, used: bool, result: Result<(), virtio_queue::Error>) {
        if used && let Some(a) = &self.active {
            a.interrupt.trigger(INT_USED_RING);
        }
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// Serves the TX queue; returns true if it stopped because RSTs are backed up.
    fn process_tx(&mut self, ops: &mut EventOps) -> bool {
        let Vsock {
            active: Some(active),
            muxer,
            queue_evts,
            broken: false,
            ..
        } = self
        else {
            return false;
        };
        let mut used = false;
        let mut stalled = false;
        let mut budget = usize::from(QUEUE_SIZE);
        let result: Result<(), virtio_queue::Error> = (|| {
            loop {
                if muxer.tx_blocked() {
                    stalled = true;
                    break;
                }
                if budget == 0 {
                    // Let other events in; come back for the rest.
                    let _ = queue_evts[TXQ].write(1);
                    break;
                }
                let Some(mut chain) = active.txq.iter(&active.mem)?.next() else {
                    break;
                };
                budget -= 1;
                let head = chain.head_index();
                if refuses_indirect(&active.mem, &active.txq, head, &mut active.segments) {
                    active.txq.add_used(&active.mem, head, 0)?;
                    used = true;
                    continue;
                }
                match VsockPacket::from_tx_virtq_chain(&active.mem, &mut chain, MAX_PKT_DATA) {
                    Ok(pkt) => {
                        let hdr = Header::from_packet(&pkt);
                        muxer.handle_guest_packet(&hdr, pkt.data_slice(), ops);
                    }
                    Err(e) => {
                        if let Some(n) = BAD_CHAIN.hit() {
                            log::warn!("vsock: bad TX chain ({n}x): {e}");
                        }
                    }
                }
                active.txq.add_used(&active.mem, head, 0)?;
                used = true;
            }
            Ok(())
        })();
        self.end_pass(used, result);
        stalled
    }

    /// Fills guest RX buffers with whatever is owed.
    fn process_rx(&mut self, ops: &mut EventOps) {
        let Vsock {
            active: Some(active),
            muxer,
            broken: false,
            ..
        } = self
        else {
            return;
        };
        let mut used = false;
        let result: Result<(), virtio_queue::Error> = (|| {
            while muxer.has_rx_work() {
                let Some(mut chain) = active.rxq.iter(&active.mem)?.next() else {
                    break; // wait for the RX notification
                };
                let head = chain.head_index();
                if refuses_indirect(&active.mem, &active.rxq, head, &mut active.segments) {
                    active.rxq.add_used(&active.mem, head, 0)?;
                    used = true;
                    continue;
                }
                let len =
                    match VsockPacket::from_rx_virtq_chain(&active.mem, &mut chain, MAX_PKT_DATA) {
                        Ok(mut pkt) => match muxer.fill_rx(&mut pkt, ops) {
                            Some(len) => len,
                            None => {
                                // Nothing after all (a host socket had no data): keep the buffer.
                                active.rxq.go_to_previous_position();
                                break;
                            }
                        },
                        Err(e) => {
                            if let Some(n) = BAD_CHAIN.hit() {
                                log::warn!("vsock: bad RX chain ({n}x): {e}");
                            }
                            0
                        }
                    };
                active.rxq.add_used(&active.mem, head, len)?;
                used = true;
            }
            Ok(())
        })();
        self.end_pass(used, result);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(n) = BAD_CONFIG.hit() {
            log::debug!(
                "vsock: ignored config write at {offset:#x}, {} bytes ({n}x)",
                data.len()
            );
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let n = ctx.queues.len();
        let mut queues = ctx.queues.into_iter();
        let (Some(rxq), Some(txq), Some(evq)) = (queues.next(), queues.next(), queues.next())
        else {
            return Err(VirtioError::QueueNotReady(n));
        };
        self.active = Some(Active {
            mem: ctx.mem,
            rxq,
            txq,
            _evq: evq,
            interrupt: ctx.interrupt,
            segments: Vec::with_capacity(usize::from(QUEUE_SIZE)),
        });
        self.broken = false;
        // Packets queued before DRIVER_OK are served by the event loop.
        self.kick();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.reset_pending = true;
        self.kick();
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }
}
