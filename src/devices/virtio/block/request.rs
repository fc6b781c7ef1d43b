//! A virtio-blk request as the driver lays it out: a 16-byte header in device-readable
//! buffers, then data (readable for writes, writable for reads), then a one-byte status in
//! the last device-writable byte. Nothing here trusts the driver.

use super::SECTOR_SIZE;

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
