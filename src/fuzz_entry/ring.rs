//! The driver's side of a split virtqueue in guest memory, for the fuzz targets that play the
//! guest driver: descriptors, the avail ring and reading back the used ring. Writes outside
//! guest memory are ignored (the fuzzer may point anything anywhere).

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::memory::GuestMemoryMmap;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// A queue of [`Ring::SIZE`] entries: descriptor table at `base`, avail ring 256 bytes later,
/// used ring 512 bytes later (1 KiB in all).
pub struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_avail: u16,
    used_seen: u16,
}

impl Ring {
    pub const SIZE: u16 = 16;
    pub const BYTES: u64 = 0x400;

    pub fn new(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x100,
            used: base + 0x200,
            next_avail: 0,
            used_seen: 0,
        }
    }

    /// The device's view, as the transport would build it at DRIVER_OK.
    pub fn queue(&self, mem: &GuestMemoryMmap, event_idx: bool) -> Option<Queue> {
        let mut q = Queue::new(Self::SIZE).ok()?;
        q.set_size(Self::SIZE);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q.is_valid(mem).then_some(q)
    }

    pub fn set_desc(
        &self,
        mem: &GuestMemoryMmap,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let at = self.desc + 16 * u64::from(i % Self::SIZE);
        let _ = mem.write_slice(&d, GuestAddress(at));
    }

    /// Makes the chain starting at descriptor `head` available.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.next_avail % Self::SIZE);
        let _ = mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot));
        self.next_avail = self.next_avail.wrapping_add(1);
        let _ = mem.write_obj(self.next_avail, GuestAddress(self.avail + 2));
    }

    /// Writes the avail index as a buggy or hostile driver might.
    pub fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.next_avail = idx;
        let _ = mem.write_obj(idx, GuestAddress(self.avail + 2));
    }

    /// Used entries (id, len) since the last call; an index that runs ahead of what the
    /// device could have used is reported as an error.
    pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Result<Vec<(u32, u32)>, u16> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap_or(0);
        let n = idx.wrapping_sub(self.used_seen);
        let mut out = Vec::new();
        for _ in 0..n.min(Self::SIZE * 2) {
            let slot = u64::from(self.used_seen % Self::SIZE);
            let id: u32 = mem
                .read_obj(GuestAddress(self.used + 4 + 8 * slot))
                .unwrap_or(0);
            let len: u32 = mem
                .read_obj(GuestAddress(self.used + 8 + 8 * slot))
                .unwrap_or(0);
            self.used_seen = self.used_seen.wrapping_add(1);
            out.push((id, len));
        }
        if n > Self::SIZE * 2 { Err(n) } else { Ok(out) }
    }
}
