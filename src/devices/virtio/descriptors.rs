//! A descriptor chain read once into a list of guest buffers, and the two byte streams it
//! holds (device-readable, device-writable).
//!
//! virtio-queue's `DescriptorChain` follows an indirect table whether or not the driver
//! negotiated VIRTIO_RING_F_INDIRECT_DESC, and its `Reader`/`Writer` hide how many buffers a
//! request used. This walk reads each descriptor exactly once (so the driver cannot change the
//! chain between a check and its use), ends after as many descriptors as the queue has (a
//! loop), and refuses a descriptor that points to an indirect table: no device here offers
//! VIRTIO_RING_F_INDIRECT_DESC, so such a chain is an error for that request.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::vmm::memory::GuestMemoryMmap;

/// Size of a split-ring descriptor.
const DESC_SIZE: u64 = 16;
/// VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT.
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor index {index} is outside the {size}-entry table")]
    IndexOutOfRange { index: u16, size: u16 },
    #[error("descriptor {0} is not in guest memory")]
    Unreadable(u16),
    #[error(
        "descriptor {0} refers to an indirect table, but VIRTIO_RING_F_INDIRECT_DESC was not \
         negotiated"
    )]
    Indirect(u16),
    #[error("the chain has more descriptors than the queue ({0}): a loop")]
    TooLong(u16),
    #[error("bytes {offset}+{len} are past the end of the {total}-byte buffers")]
    PastEnd { offset: u64, len: u64, total: u64 },
    #[error("buffer at {0:#x} is not in the guest memory devices may use")]
    Memory(u64),
}

/// Reads the chain whose head is `head` from the descriptor table at `table` of a queue of
/// `queue_size` entries into `out` (cleared first; it never holds more than `queue_size`
/// entries).
pub fn read_chain(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    queue_size: u16,
    head: u16,
    out: &mut Vec<Segment>,
) -> Result<(), ChainError> {
    out.clear();
    let mut index = head;
    loop {
        if index >= queue_size {
            return Err(ChainError::IndexOutOfRange {
                index,
                size: queue_size,
            });
        }
        if out.len() >= usize::from(queue_size) {
            return Err(ChainError::TooLong(queue_size));
        }
        let at = table
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(ChainError::Unreadable(index))?;
        let mut raw = [0u8; DESC_SIZE as usize];
        mem.read_slice(&mut raw, at)
            .map_err(|_| ChainError::Unreadable(index))?;
        let addr = u64::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]);
        let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let flags = u16::from_le_bytes([raw[12], raw[13]]);
        let next = u16::from_le_bytes([raw[14], raw[15]]);
        if flags & F_INDIRECT != 0 {
            return Err(ChainError::Indirect(index));
        }
        out.push(Segment {
            addr: GuestAddress(addr),
            len,
            writable: flags & F_WRITE != 0,
        });
        if flags & F_NEXT == 0 {
            return Ok(());
        }
        index = next;
    }
}

/// Whether every non-empty buffer lies inside `mem`.
pub fn all_in_memory(mem: &GuestMemoryMmap, segs: &[Segment]) -> Result<(), ChainError> {
    for s in segs.iter().filter(|s| s.len > 0) {
        if !mem.check_range(s.addr, s.len as usize) {
            return Err(ChainError::Memory(s.addr.raw_value()));
        }
    }
    Ok(())
}

/// The device-readable or the device-writable buffers of a chain, as one byte stream.
#[derive(Clone, Copy)]
pub struct Stream<'a> {
    segs: &'a [Segment],
    writable: bool,
}

impl<'a> Stream<'a> {
    pub fn readable(segs: &'a [Segment]) -> Self {
        Stream {
            segs,
            writable: false,
        }
    }

    pub fn writable(segs: &'a [Segment]) -> Self {
        Stream {
            segs,
            writable: true,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Segment> + use<'a> {
        let writable = self.writable;
        self.segs.iter().filter(move |s| s.writable == writable)
    }

    /// Total bytes (at most 256 descriptors of 4 GiB: no overflow).
    pub fn bytes(&self) -> u64 {
        self.iter().map(|s| u64::from(s.len)).sum()
    }

    /// How many bytes of each buffer fall into the stream range `[start, end)`, in order
    /// (buffers outside the range give 0).
    pub fn overlaps(&self, start: u64, end: u64) -> impl Iterator<Item = u64> + use<'a> {
        let mut pos = 0u64;
        self.iter().map(move |s| {
            let (a, b) = (pos, pos + u64::from(s.len));
            pos = b;
            b.min(end).saturating_sub(a.max(start))
        })
    }

    /// Calls `f(guest address, position in the range, length)` for each piece of the stream
    /// range `[offset, offset + len)`.
    fn pieces(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(GuestAddress, usize, usize) -> Result<(), ChainError>,
    ) -> Result<(), ChainError> {
        let total = self.bytes();
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= total)
            .ok_or(ChainError::PastEnd {
                offset,
                len: len as u64,
                total,
            })?;
        let mut pos = 0u64;
        let mut done = 0usize;
        for s in self.iter() {
            let (a, b) = (pos, pos + u64::from(s.len));
            pos = b;
            let (from, to) = (a.max(offset), b.min(end));
            if from >= to {
                continue;
            }
            let n = (to - from) as usize;
            let addr = s
                .addr
                .checked_add(from - a)
                .ok_or(ChainError::Memory(s.addr.raw_value()))?;
            f(addr, done, n)?;
            done += n;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes from the stream at `offset` out of guest memory.
    pub fn read_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        self.pieces(offset, buf.len(), |addr, at, n| {
            mem.read_slice(&mut buf[at..at + n], addr)
                .map_err(|_| ChainError::Memory(addr.raw_value()))
        })
    }

    /// Copies `buf` into guest memory at stream position `offset`.
    pub fn write_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), ChainError> {
        self.pieces(offset, buf.len(), |addr, at, n| {
            mem.write_slice(&buf[at..at + n], addr)
                .map_err(|_| ChainError::Memory(addr.raw_value()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: u64 = 0x1000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn store(mem: &GuestMemoryMmap, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(TABLE + u64::from(index) * 16))
            .unwrap();
    }

    fn chain(mem: &GuestMemoryMmap, size: u16, head: u16) -> Result<Vec<Segment>, ChainError> {
        let mut v = Vec::new();
        read_chain(mem, GuestAddress(TABLE), size, head, &mut v).map(|()| v)
    }

    #[test]
    fn reads_a_chain_in_order() {
        let m = mem();
        store(&m, 3, 0x8000, 16, F_NEXT, 5);
        store(&m, 5, 0x9000, 100, F_NEXT | F_WRITE, 0);
        store(&m, 0, 0xa000, 1, F_WRITE, 0);
        let c = chain(&m, 8, 3).unwrap();
        assert_eq!(
            c,
            vec![
                Segment {
                    addr: GuestAddress(0x8000),
                    len: 16,
                    writable: false
                },
                Segment {
                    addr: GuestAddress(0x9000),
                    len: 100,
                    writable: true
                },
                Segment {
                    addr: GuestAddress(0xa000),
                    len: 1,
                    writable: true
                },
            ]
        );
        assert_eq!(Stream::readable(&c).bytes(), 16);
        assert_eq!(Stream::writable(&c).bytes(), 101);
    }

    #[test]
    fn bad_chains_are_errors() {
        let m = mem();
        // A loop ends after as many descriptors as the queue has.
        store(&m, 0, 0x8000, 16, F_NEXT, 1);
        store(&m, 1, 0x9000, 16, F_NEXT, 0);
        assert_eq!(chain(&m, 8, 0), Err(ChainError::TooLong(8)));
        // A next index outside the table, a head outside the table.
        store(&m, 0, 0x8000, 16, F_NEXT, 9);
        assert_eq!(
            chain(&m, 8, 0),
            Err(ChainError::IndexOutOfRange { index: 9, size: 8 })
        );
        assert!(chain(&m, 8, 8).is_err());
        // An indirect descriptor, first or later in the chain: never followed.
        store(&m, 0, 0x8000, 16, F_NEXT, 1);
        store(&m, 1, 0x9000, 64, F_INDIRECT, 0);
        assert_eq!(chain(&m, 8, 0), Err(ChainError::Indirect(1)));
        assert_eq!(chain(&m, 8, 1), Err(ChainError::Indirect(1)));
        // A table outside guest memory.
        let mut v = Vec::new();
        assert_eq!(
            read_chain(&m, GuestAddress(u64::MAX - 8), 8, 0, &mut v),
            Err(ChainError::Unreadable(0))
        );
    }

    #[test]
    fn streams_span_buffers() {
        let m = mem();
        let segs = [
            Segment {
                addr: GuestAddress(0x8000),
                len: 4,
                writable: true,
            },
            Segment {
                addr: GuestAddress(0x100),
                len: 3,
                writable: false,
            },
            Segment {
                addr: GuestAddress(0x9000),
                len: 4,
                writable: true,
            },
        ];
        let w = Stream::writable(&segs);
        w.write_at(&m, 2, &[1, 2, 3, 4, 5]).unwrap();
        let mut a = [0u8; 4];
        m.read_slice(&mut a, GuestAddress(0x8000)).unwrap();
        assert_eq!(a, [0, 0, 1, 2]);
        m.read_slice(&mut a, GuestAddress(0x9000)).unwrap();
        assert_eq!(a, [3, 4, 5, 0]);
        let mut b = [0u8; 3];
        w.read_at(&m, 3, &mut b).unwrap();
        assert_eq!(b, [2, 3, 4]);
        assert!(matches!(
            w.write_at(&m, 6, &[0; 3]),
            Err(ChainError::PastEnd { .. })
        ));
        assert!(w.write_at(&m, u64::MAX, &[0; 3]).is_err());
        assert_eq!(w.overlaps(3, 7).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            Stream::readable(&segs).overlaps(0, 2).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn buffers_outside_memory_are_found() {
        let m = mem();
        let inside = Segment {
            addr: GuestAddress(0x1000),
            len: 0x1000,
            writable: true,
        };
        let across_the_end = Segment {
            addr: GuestAddress((1 << 20) - 8),
            len: 16,
            writable: true,
        };
        let empty_anywhere = Segment {
            addr: GuestAddress(u64::MAX),
            len: 0,
            writable: false,
        };
        assert!(all_in_memory(&m, &[inside, empty_anywhere]).is_ok());
        assert_eq!(
            all_in_memory(&m, &[inside, across_the_end]),
            Err(ChainError::Memory((1 << 20) - 8))
        );
        assert!(
            Stream::writable(&[across_the_end])
                .write_at(&m, 0, &[0; 16])
                .is_err()
        );
    }
}
