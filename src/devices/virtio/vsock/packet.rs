//! The 44-byte vsock packet header as plain values, read from and written to virtio-vsock's
//! `VsockPacket` (which parses the descriptor chains and bounds-checks guest memory).

use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::bitmap::BitmapSlice;

use super::{HOST_CID, TYPE_STREAM, op};

pub use virtio_vsock::packet::Error as PacketError;

/// Header length on the wire.
pub const HEADER_LEN: usize = PKT_HEADER_SIZE;

/// A packet header (virtio 1.2 §5.10.6), little-endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// The header the guest wrote (as virtio-vsock read it once, so later guest writes to the
    /// buffer change nothing).
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Header {
        Header {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// A device-to-guest packet header for connection `(host_port, guest_port)`.
    pub fn to_guest(guest_cid: u64, host_port: u32, guest_port: u32, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: host_port,
            dst_port: guest_port,
            type_: TYPE_STREAM,
            op,
            ..Default::default()
        }
    }

    /// The RST answering `self` (a guest packet).
    pub fn rst_reply(&self) -> Header {
        Header::to_guest(self.src_cid, self.dst_port, self.src_port, op::RST)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |o: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Writes the header into an RX packet's header buffer.
    pub fn write_to<B: BitmapSlice>(
        &self,
        pkt: &mut VsockPacket<'_, B>,
    ) -> Result<(), PacketError> {
        pkt.set_header_from_raw(&self.to_bytes())
    }
}

/// A name for log lines.
pub fn op_name(op: u16) -> &'static str {
    match op {
        op::REQUEST => "REQUEST",
        op::RESPONSE => "RESPONSE",
        op::RST => "RST",
        op::SHUTDOWN => "SHUTDOWN",
        op::RW => "RW",
        op::CREDIT_UPDATE => "CREDIT_UPDATE",
        op::CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "unknown op",
    }
}

/// Whether `op` is one the protocol defines.
pub fn is_known_op(op: u16) -> bool {
    (op::REQUEST..=op::CREDIT_REQUEST).contains(&op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory::GuestMemoryMmap;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    const F_WRITE: u16 = 2;

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0x55,
            buf_alloc: 4096,
            fwd_cnt: 99,
        }
    }

    #[test]
    fn vsock_header_round_trips_and_matches_the_crate() {
        let h = sample();
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        assert_eq!(HEADER_LEN, 44);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_slice(&h.to_bytes(), GuestAddress(0x1_0000))
            .unwrap();
        mem.write_slice(b"payload", GuestAddress(0x2_0000)).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(0x1_0000, 44, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(0x2_0000, 7, 0, 0)),
        ];
        let mut chain = vq.build_desc_chain(&descs).unwrap();
        let pkt = VsockPacket::from_tx_virtq_chain(&mem, &mut chain, 65536).unwrap();
        assert_eq!(Header::from_packet(&pkt), h);
    }

    #[test]
    fn vsock_header_is_written_into_rx_buffers() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(0x1_0000, 44, F_WRITE, 0)),
            RawDescriptor::from(SplitDescriptor::new(0x2_0000, 100, F_WRITE, 0)),
        ];
        vq.build_desc_chain(&descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut chain = q.iter(&mem).unwrap().next().unwrap();
        let mut pkt = VsockPacket::from_rx_virtq_chain(&mem, &mut chain, 65536).unwrap();
        let h = Header::to_guest(3, 1 << 30, 52, op::REQUEST);
        h.write_to(&mut pkt).unwrap();
        let mut raw = [0u8; 44];
        mem.read_slice(&mut raw, GuestAddress(0x1_0000)).unwrap();
        let back = Header::from_bytes(&raw);
        assert_eq!(back, h);
        assert_eq!((back.src_cid, back.dst_cid), (HOST_CID, 3));
        let r = sample().rst_reply();
        assert_eq!(
            (r.src_port, r.dst_port, r.dst_cid, r.op),
            (52, 1234, 3, op::RST)
        );
        assert_eq!(op_name(op::CREDIT_REQUEST), "CREDIT_REQUEST");
        assert!(is_known_op(op::RW) && !is_known_op(0) && !is_known_op(8));
    }
}
