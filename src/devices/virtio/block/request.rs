//! A virtio-blk request as the driver lays it out: a 16-byte header in device-readable
//! buffers, then data (readable for writes, writable for reads), then a one-byte status in
//! the last device-writable byte. Nothing here trusts the driver.

use super::{MAX_REQUEST_BYTES, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
use crate::devices::virtio::descriptors::{ChainError, Segment, Stream};

/// Request types (virtio 1.2 §5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;
pub const HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: RequestKind,
    pub sector: u64,
}

/// Why a request cannot be served (each becomes IOERR for that request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("header is {0} bytes, needs 16")]
    ShortHeader(usize),
    #[error("no device-writable byte for the status")]
    NoStatus,
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    #[error("sectors {sector}+{sectors} are past the disk's end ({capacity} sectors)")]
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("{0} data segments, at most {SEG_MAX} allowed")]
    TooManySegments(usize),
    #[error("a {0}-byte data segment, at most {SIZE_MAX} allowed")]
    SegmentTooLarge(u64),
    #[error("bad descriptor chain: {0}")]
    Chain(#[from] ChainError),
    #[error("a write or flush after a failed flush (the disk lost data)")]
    AfterFlushError,
}

/// Where a request's parts are in its chain: the header is the first 16 readable bytes, the
/// status the last writable byte, everything else is data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub readable: u64,
    /// Writable bytes before the status byte.
    pub data_writable: u64,
}

impl Layout {
    /// Checks the chain's shape and bounds (before anything touches the disk): a status byte,
    /// a whole header, at most SEG_MAX data segments of at most SIZE_MAX bytes each (so at
    /// most MAX_REQUEST_BYTES of data). A descriptor shared by the header or the status and
    /// data counts as a data segment with its data bytes.
    pub fn check(segs: &[Segment]) -> Result<Layout, RequestError> {
        let (r, w) = (Stream::readable(segs), Stream::writable(segs));
        let readable = r.bytes();
        let writable = w.bytes();
        if writable == 0 {
            return Err(RequestError::NoStatus);
        }
        let header = HEADER_LEN as u64;
        if readable < header {
            return Err(RequestError::ShortHeader(readable as usize));
        }
        let data_writable = writable - 1;
        let data = r
            .overlaps(header, readable)
            .chain(w.overlaps(0, data_writable))
            .filter(|&n| n > 0);
        let (mut count, mut largest) = (0usize, 0u64);
        for n in data {
            count += 1;
            largest = largest.max(n);
        }
        if count > SEG_MAX as usize {
            return Err(RequestError::TooManySegments(count));
        }
        if largest > u64::from(SIZE_MAX) {
            return Err(RequestError::SegmentTooLarge(largest));
        }
        debug_assert!((readable - header) + data_writable <= MAX_REQUEST_BYTES);
        Ok(Layout {
            readable,
            data_writable,
        })
    }
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, RequestError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(RequestError::ShortHeader(bytes.len()))?;
        let t = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let sector = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let kind = match t {
            VIRTIO_BLK_T_IN => RequestKind::In,
            VIRTIO_BLK_T_OUT => RequestKind::Out,
            VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
            VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
            other => RequestKind::Unsupported(other),
        };
        Ok(Header { kind, sector })
    }
}

/// Checks a data transfer of `len` bytes at `sector` against a disk of `capacity` sectors;
/// returns the byte offset.
pub fn check_range(sector: u64, len: u64, capacity: u64) -> Result<u64, RequestError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::UnalignedLength(len));
    }
    let sectors = len / SECTOR_SIZE;
    let out_of_range = RequestError::OutOfRange {
        sector,
        sectors,
        capacity,
    };
    let end = sector.checked_add(sectors).ok_or(out_of_range.clone())?;
    // The byte range must be representable too.
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .filter(|o| o.checked_add(len).is_some())
        .ok_or(out_of_range.clone())?;
    if end > capacity {
        return Err(out_of_range);
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn seg(len: u32, writable: bool) -> Segment {
        Segment {
            addr: GuestAddress(0x1000),
            len,
            writable,
        }
    }

    /// Header, `n` data segments of `len` bytes, status.
    fn chain(n: usize, len: u32, writable: bool) -> Vec<Segment> {
        let mut v = vec![seg(16, false)];
        v.extend(std::iter::repeat_n(seg(len, writable), n));
        v.push(seg(1, true));
        v
    }

    #[test]
    fn layout_bounds() {
        let max = SEG_MAX as usize;
        assert_eq!(
            Layout::check(&chain(max, SIZE_MAX, true)),
            Ok(Layout {
                readable: 16,
                data_writable: MAX_REQUEST_BYTES
            })
        );
        assert!(Layout::check(&chain(max, SIZE_MAX, false)).is_ok());
        assert_eq!(
            Layout::check(&chain(max + 1, 512, true)),
            Err(RequestError::TooManySegments(max + 1))
        );
        assert_eq!(
            Layout::check(&chain(1, SIZE_MAX + 512, false)),
            Err(RequestError::SegmentTooLarge(u64::from(SIZE_MAX) + 512))
        );
        assert_eq!(
            Layout::check(&chain(1, 1 << 30, true)),
            Err(RequestError::SegmentTooLarge(1 << 30))
        );
        // Zero-length descriptors carry no data and do not count.
        assert!(Layout::check(&chain(max + 50, 0, true)).is_ok());
        // One data byte more than MAX_REQUEST_BYTES, wherever it is, is refused; header and
        // status sharing descriptors with data count as data segments.
        let mut v = chain(max, SIZE_MAX, true);
        v.last_mut().unwrap().len = 2;
        assert_eq!(
            Layout::check(&v),
            Err(RequestError::TooManySegments(max + 1))
        );
        let mut v = vec![seg(16 + 512, false)];
        v.extend(std::iter::repeat_n(seg(SIZE_MAX, false), max - 1));
        v.push(seg(SIZE_MAX, false));
        v.push(seg(1, true));
        assert_eq!(
            Layout::check(&v),
            Err(RequestError::TooManySegments(max + 1))
        );
        let mut v = vec![seg(16 + SIZE_MAX, false)];
        v.extend(std::iter::repeat_n(seg(SIZE_MAX, false), max - 1));
        v.push(seg(512 + 1, true));
        assert_eq!(
            Layout::check(&v),
            Err(RequestError::TooManySegments(max + 1))
        );
        let mut v = vec![seg(16 + SIZE_MAX, false)];
        v.extend(std::iter::repeat_n(seg(SIZE_MAX, false), max - 2));
        v.push(seg(SIZE_MAX + 1, true));
        assert_eq!(
            Layout::check(&v).map(|l| l.data_writable),
            Ok(u64::from(SIZE_MAX))
        );
        // No status byte, a short header.
        assert_eq!(
            Layout::check(&[seg(16, false)]),
            Err(RequestError::NoStatus)
        );
        assert_eq!(
            Layout::check(&[seg(8, false), seg(1, true)]),
            Err(RequestError::ShortHeader(8))
        );
    }

    fn hdr(t: u32, sector: u64) -> Vec<u8> {
        let mut v = t.to_le_bytes().to_vec();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&sector.to_le_bytes());
        v
    }

    #[test]
    fn parses_types_and_sector() {
        assert_eq!(
            Header::parse(&hdr(0, 7)).unwrap(),
            Header {
                kind: RequestKind::In,
                sector: 7
            }
        );
        assert_eq!(Header::parse(&hdr(1, 0)).unwrap().kind, RequestKind::Out);
        assert_eq!(Header::parse(&hdr(4, 0)).unwrap().kind, RequestKind::Flush);
        assert_eq!(Header::parse(&hdr(8, 0)).unwrap().kind, RequestKind::GetId);
        assert_eq!(
            Header::parse(&hdr(11, 0)).unwrap().kind,
            RequestKind::Unsupported(11)
        );
        assert_eq!(Header::parse(&[0; 15]), Err(RequestError::ShortHeader(15)));
    }

    #[test]
    fn ranges() {
        assert_eq!(check_range(0, 512, 1), Ok(0));
        assert_eq!(check_range(3, 1024, 5), Ok(1536));
        assert!(check_range(0, 100, 10).is_err());
        assert!(check_range(4, 1024, 5).is_err());
        assert!(check_range(u64::MAX, 512, u64::MAX).is_err());
        assert!(check_range(u64::MAX / 512, 512 * 4, u64::MAX).is_err());
        assert_eq!(check_range(5, 0, 5), Ok(2560));
    }
}
