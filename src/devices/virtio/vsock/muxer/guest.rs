//! The guest side of the muxer: packets from the TX queue (requests, data, shutdowns,
//! credit, resets) and the packets that fill guest RX buffers.

use std::io;

use event_manager::EventOps;
use virtio_vsock::packet::VsockPacket;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

use super::{BAD_PACKET, HOST_IO, LIMITS, Muxer, Slot};
use crate::devices::virtio::vsock::connection::{Connection, RxKind, State};
use crate::devices::virtio::vsock::packet::{HEADER_LEN, Header, is_known_op, op_name};
use crate::devices::virtio::vsock::{HOST_CID, MAX_PENDING_RST, MAX_PKT_DATA, TYPE_STREAM, op};

fn io_kind(e: &VolatileMemoryError) -> Option<io::ErrorKind> {
    match e {
        VolatileMemoryError::IOError(e) => Some(e.kind()),
        _ => None,
    }
}

impl Muxer {
    fn queue_rst(&mut self, hdr: Header) {
        if self.rsts.len() < MAX_PENDING_RST {
            self.rsts.push_back(hdr);
        } else if let Some(n) = LIMITS.hit() {
            log::warn!("vsock: RST queue full, one dropped ({n}x)");
        }
    }

    /// One packet from the TX queue (`data` holds `hdr.len` bytes when `len` is not zero).
    pub fn handle_guest_packet(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, ()>>,
        ops: &mut EventOps,
    ) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            if let Some(n) = BAD_PACKET.hit() {
                log::warn!(
                    "vsock: dropped a packet from CID {} to CID {} ({n}x)",
                    hdr.src_cid,
                    hdr.dst_cid
                );
            }
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            if let Some(n) = BAD_PACKET.hit() {
                log::warn!("vsock: packet of socket type {} ({n}x)", hdr.type_);
            }
            if hdr.op == op::REQUEST {
                self.queue_rst(hdr.rst_reply());
            }
            return;
        }
        let Some(&idx) = self.by_key.get(&(hdr.dst_port, hdr.src_port)) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(hdr, ops),
                op::RST => {}
                o if is_known_op(o) => self.queue_rst(hdr.rst_reply()),
                o => {
                    if let Some(n) = BAD_PACKET.hit() {
                        log::warn!("vsock: dropped a packet with op {o} ({n}x)");
                    }
                }
            }
            return;
        };
        let Some(s) = self.slot(idx) else { return };
        if s.conn.state() == State::Killed {
            match hdr.op {
                op::RST => self.free_slot(idx, ops),
                // The guest has forgotten the old connection and reuses its ports.
                op::REQUEST => {
                    self.free_slot(idx, ops);
                    self.guest_connect(hdr, ops);
                }
                _ => {}
            }
            return;
        }
        s.conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let ok = match hdr.op {
            op::RST => return self.free_slot(idx, ops),
            op::RESPONSE => {
                let ok = s.conn.on_response();
                if ok {
                    self.host_connect_accepted(idx, ops);
                }
                ok
            }
            op::RW if s.conn.guest_may_send() => return self.guest_data(idx, hdr, data, ops),
            op::SHUTDOWN => s.conn.on_guest_shutdown(hdr.flags),
            op::CREDIT_UPDATE => true,
            op::CREDIT_REQUEST => {
                s.conn.credit_requested_by_guest();
                true
            }
            _ => false,
        };
        if !ok {
            if let Some(n) = BAD_PACKET.hit() {
                log::warn!(
                    "vsock: unexpected {} ({}) in state {:?}; resetting the connection ({n}x)",
                    op_name(hdr.op),
                    hdr.op,
                    self.slot(idx).map(|s| s.conn.state())
                );
            }
            return self.kill(idx, ops);
        }
        self.after_change(idx, ops);
    }

    /// A guest REQUEST for host port `hdr.dst_port`.
    fn guest_connect(&mut self, hdr: &Header, ops: &mut EventOps) {
        if let Err(limit) = self.room_for_one_more() {
            if let Some(n) = LIMITS.hit() {
                log::warn!("vsock: {limit} reached, refusing a guest connection ({n}x)");
            }
            return self.queue_rst(hdr.rst_reply());
        }
        let conn =
            Connection::guest_request(hdr.dst_port, hdr.src_port, hdr.buf_alloc, hdr.fwd_cnt);
        let idx = self.alloc(Slot::new(None, conn));
        self.grow_window(idx);
        self.by_key.insert((hdr.dst_port, hdr.src_port), idx);
        self.set_deadline(idx);
        self.try_connect(idx, ops);
    }

    /// RW from the guest: straight to the host socket, the rest into the connection's buffer
    /// (bounded by the credit we gave).
    fn guest_data(
        &mut self,
        idx: usize,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, ()>>,
        ops: &mut EventOps,
    ) {
        let len = hdr.len as usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        let Some(s) = self.slot(idx) else { return };
        let result = (|| {
            if len == 0 {
                return Ok(());
            }
            let Some(data) = data.filter(|d| d.len() >= len) else {
                return Err("packet data missing");
            };
            if !s.conn.accept_guest_data(hdr.len) {
                return Err("guest exceeded its credit");
            }
            let mut done = 0;
            if s.conn.txbuf.is_empty()
                && let Some(stream) = s.stream.as_mut()
            {
                while done < len {
                    let part = data.subslice(done, len - done).map_err(|_| "bad slice")?;
                    match stream.write_volatile(&part) {
                        Ok(0) => return Err("host socket wrote nothing"),
                        Ok(n) => done += n,
                        Err(e) => match io_kind(&e) {
                            Some(io::ErrorKind::WouldBlock) => break,
                            Some(io::ErrorKind::Interrupted) => {}
                            _ => return Err("write to the host socket failed"),
                        },
                    }
                }
                s.conn.forwarded(done as u32);
            }
            if done < len {
                let rest = len - done;
                scratch.resize(rest, 0);
                let part = data.subslice(done, rest).map_err(|_| "bad slice")?;
                let copied = part.copy_to(&mut scratch[..rest]);
                s.conn.txbuf.push(&scratch[..copied]);
            }
            Ok(())
        })();
        self.scratch = scratch;
        match result {
            Ok(()) => self.after_change(idx, ops),
            Err(why) => {
                if let Some(n) = BAD_PACKET.hit() {
                    log::warn!("vsock: {why}; resetting the connection ({n}x)");
                }
                self.kill(idx, ops);
            }
        }
    }

    // ---- packets to the guest ----

    /// Fills one guest RX buffer; returns the bytes written, or None when nothing is owed
    /// (the buffer is then left for later).
    pub fn fill_rx(&mut self, pkt: &mut VsockPacket<'_, ()>, ops: &mut EventOps) -> Option<u32> {
        if let Some(h) = self.rsts.pop_front() {
            return Some(write_header(pkt, &h));
        }
        while let Some(idx) = self.ready.pop_front() {
            let Some(s) = self.slot(idx) else { continue };
            s.queued = false;
            if let Some(len) = self.fill_from(idx, pkt, ops) {
                self.mark_ready(idx);
                return Some(len);
            }
        }
        None
    }

    fn fill_from(
        &mut self,
        idx: usize,
        pkt: &mut VsockPacket<'_, ()>,
        ops: &mut EventOps,
    ) -> Option<u32> {
        let room = pkt
            .data_slice()
            .map_or(0, |d| d.len().min(MAX_PKT_DATA as usize));
        loop {
            let guest_cid = self.guest_cid;
            let s = self.slot(idx)?;
            let kind = s.conn.next_rx(room > 0)?;
            let mut hdr = Header::to_guest(guest_cid, s.conn.local_port, s.conn.peer_port, 0);
            match kind {
                RxKind::Rst => {
                    hdr.op = op::RST;
                    let len = write_header(pkt, &hdr);
                    s.conn.sent(kind);
                    self.free_slot(idx, ops);
                    return Some(len);
                }
                RxKind::Request => hdr.op = op::REQUEST,
                RxKind::Response => hdr.op = op::RESPONSE,
                RxKind::Shutdown(flags) => {
                    hdr.op = op::SHUTDOWN;
                    hdr.flags = flags;
                }
                RxKind::CreditUpdate => hdr.op = op::CREDIT_UPDATE,
                RxKind::CreditRequest => hdr.op = op::CREDIT_REQUEST,
                RxKind::Data => {
                    let n = room.min(s.conn.peer_credit() as usize);
                    let read = match (s.stream.as_mut(), pkt.data_slice()) {
                        (Some(stream), Some(slice)) => match slice.subslice(0, n) {
                            Ok(mut part) => stream.read_volatile(&mut part),
                            Err(e) => Err(e),
                        },
                        _ => Ok(0),
                    };
                    match read {
                        Ok(0) => s.conn.host_eof(),
                        Ok(n) => {
                            s.conn.sent_data(n as u32);
                            hdr.op = op::RW;
                            hdr.len = n as u32;
                        }
                        Err(e) => match io_kind(&e) {
                            Some(io::ErrorKind::WouldBlock) => {
                                s.conn.host_drained();
                                self.sync_interest(idx, ops);
                            }
                            Some(io::ErrorKind::Interrupted) => {}
                            _ => {
                                if let Some(n) = HOST_IO.hit() {
                                    log::debug!(
                                        "vsock: read from a host socket failed ({n}x): {e}"
                                    );
                                }
                                self.kill(idx, ops);
                            }
                        },
                    }
                    if hdr.op != op::RW {
                        continue;
                    }
                }
            }
            // Every packet carries the window: widen it first while the budget lasts.
            self.grow_window(idx);
            let s = self.slot(idx)?;
            (hdr.buf_alloc, hdr.fwd_cnt) = s.conn.stamp();
            let len = write_header(pkt, &hdr) + hdr.len;
            s.conn.sent(kind);
            self.after_change(idx, ops);
            return Some(len);
        }
    }
}

/// Writes a header into the guest buffer; returns the bytes used (0 if it could not).
fn write_header(pkt: &mut VsockPacket<'_, ()>, hdr: &Header) -> u32 {
    match hdr.write_to(pkt) {
        Ok(()) => HEADER_LEN as u32,
        Err(e) => {
            if let Some(n) = BAD_PACKET.hit() {
                log::warn!("vsock: cannot write to a guest RX buffer ({n}x): {e}");
            }
            0
        }
    }
}
