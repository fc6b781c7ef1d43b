//! When may a *writable* image be taken as a crosvm composite descriptor?
//!
//! micro-vmm's own CLI never asks: a writable image is raw unless the user names its format
//! (`super::open_image`). A crosvm-compatible mode has to accept what AVF hands crosvm,
//! though: a writable composite over the instance and storage images whose components are
//! file descriptors the caller passed (`/proc/self/fd/N`). A guest can write anything into a
//! raw writable disk, including a descriptor, so such a mode decides with [`classify`]: the
//! file is a composite only when
//!
//! - it starts with the composite magic and is at most [`MAX_WRITABLE_DESCRIPTOR`] bytes
//!   (AVF's are a few hundred bytes; a guest's disk is megabytes);
//! - the protobuf after the magic is canonical: decoding and re-encoding it gives the same
//!   bytes, so there is no unknown field, no padding and nothing after the message;
//! - it is a valid descriptor (`cdisk::parse`);
//! - every component is either `/proc/self/fd/N` with N one of the file descriptors the
//!   process inherited (the caller's list), or, in a version 2 descriptor, a bare file name
//!   (no `/`, not `.` or `..`): a file beside the descriptor.
//!
//! Anything else is served as raw bytes, with the reason, so the guest sees its own data and
//! micro-vmm opens no other file. Block-device components stay refused unless
//! `OpenMode::allow_block_devices` is set.

use std::os::fd::RawFd;

use prost::Message;

use super::cdisk::{self, CDISK_MAGIC, proto};
use super::raw::RawFile;
use super::{DiskError, Format};

/// Largest writable image that may still be a descriptor.
pub const MAX_WRITABLE_DESCRIPTOR: u64 = 4096;

/// What [`classify`] decided for a writable image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritableFormat {
    /// Open it as a composite descriptor.
    Composite,
    /// Serve its bytes as a raw disk; `reason` says why it is not a descriptor (for a log line).
    Raw { reason: String },
}

/// Decides how a crosvm-compatible mode opens the writable image `file`; `inherited_fds` are
/// the file descriptors the process was started with (recorded before it opened anything).
/// Errors are host I/O errors only; a file that is not an acceptable descriptor is `Raw`.
pub fn classify(file: &RawFile, inherited_fds: &[RawFd]) -> Result<WritableFormat, DiskError> {
    let raw = |reason: String| Ok(WritableFormat::Raw { reason });
    if Format::detect(&file.head()?) != Format::Composite {
        return raw("no composite descriptor magic".into());
    }
    let size = file.size();
    if size > MAX_WRITABLE_DESCRIPTOR {
        return raw(format!(
            "{size} bytes is larger than a writable descriptor may be \
             ({MAX_WRITABLE_DESCRIPTOR})"
        ));
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_at(&mut bytes, 0)?;
    classify_bytes(&bytes, file.path(), inherited_fds)
}

/// [`classify`] on the bytes of a file already read (at most [`MAX_WRITABLE_DESCRIPTOR`]).
pub fn classify_bytes(
    bytes: &[u8],
    path: &std::path::Path,
    inherited_fds: &[RawFd],
) -> Result<WritableFormat, DiskError> {
    let raw = |reason: String| Ok(WritableFormat::Raw { reason });
    if bytes.len() as u64 > MAX_WRITABLE_DESCRIPTOR {
        return raw(format!(
            "{} bytes is larger than a writable descriptor may be ({MAX_WRITABLE_DESCRIPTOR})",
            bytes.len()
        ));
    }
    let Some(body) = bytes.strip_prefix(CDISK_MAGIC) else {
        return raw("no composite descriptor magic".into());
    };
    let msg = match proto::CompositeDisk::decode(body) {
        Ok(m) => m,
        Err(e) => return raw(format!("not a protobuf descriptor: {e}")),
    };
    if msg.encode_to_vec() != body {
        return raw(
            "the descriptor is not canonical (unknown fields, padding or trailing bytes)".into(),
        );
    }
    let desc = match cdisk::parse(bytes, path) {
        Ok(d) => d,
        Err(e) => return raw(e.to_string()),
    };
    for c in &msg.component_disks {
        if let Err(why) = component_allowed(&c.file_path, desc.version, inherited_fds) {
            return raw(format!("component {:?}: {why}", c.file_path));
        }
    }
    Ok(WritableFormat::Composite)
}

/// A component path as written in the descriptor: an inherited fd, or a file beside it.
fn component_allowed(p: &str, version: u64, inherited_fds: &[RawFd]) -> Result<(), String> {
    if let Some(n) = p.strip_prefix("/proc/self/fd/") {
        let fd: RawFd = n
            .parse()
            .ok()
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| "not a file descriptor number".to_string())?;
        return if inherited_fds.contains(&fd) {
            Ok(())
        } else {
            Err(format!("fd {fd} was not inherited by this process"))
        };
    }
    if p.contains('/') || p == "." || p == ".." {
        return Err("neither an inherited fd nor a file beside the descriptor".into());
    }
    if version < 2 {
        return Err("a bare file name is beside the descriptor only in version 2".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::path::Path;

    fn comp(path: &str, offset: u64, rw: bool) -> proto::ComponentDisk {
        proto::ComponentDisk {
            file_path: path.into(),
            offset,
            read_write_capability: rw as i32,
            file_offset: 0,
        }
    }

    fn descriptor(version: u64, comps: Vec<proto::ComponentDisk>, length: u64) -> Vec<u8> {
        let msg = proto::CompositeDisk {
            version,
            component_disks: comps,
            length,
        };
        let mut b = CDISK_MAGIC.to_vec();
        msg.encode(&mut b).unwrap();
        b
    }

    /// AVF's writable disk: header, instance, storage, footer, all passed as fds.
    fn avf(fds: [i32; 4]) -> Vec<u8> {
        descriptor(
            1,
            vec![
                comp(&format!("/proc/self/fd/{}", fds[0]), 0, false),
                comp(&format!("/proc/self/fd/{}", fds[1]), 20480, true),
                comp(&format!("/proc/self/fd/{}", fds[2]), 20480 + 4096, true),
                comp(&format!("/proc/self/fd/{}", fds[3]), 20480 + 8192, false),
            ],
            20480 + 8192 + 20480,
        )
    }

    fn is_raw(r: Result<WritableFormat, DiskError>, why: &str) {
        match r.unwrap() {
            WritableFormat::Raw { reason } => assert!(reason.contains(why), "{reason}"),
            WritableFormat::Composite => panic!("taken as composite, expected raw ({why})"),
        }
    }

    const P: &str = "/vm/disk.img";

    #[test]
    fn avf_descriptor_over_inherited_fds_is_composite() {
        let b = avf([10, 11, 12, 13]);
        assert_eq!(
            classify_bytes(&b, Path::new(P), &[3, 10, 11, 12, 13]).unwrap(),
            WritableFormat::Composite
        );
        // One fd the process did not inherit (it could be a file micro-vmm opened itself).
        is_raw(
            classify_bytes(&b, Path::new(P), &[10, 11, 12]),
            "fd 13 was not inherited",
        );
    }

    #[test]
    fn files_beside_the_descriptor() {
        let ok = descriptor(2, vec![comp("disk-header.img", 0, false)], 512);
        assert_eq!(
            classify_bytes(&ok, Path::new(P), &[]).unwrap(),
            WritableFormat::Composite
        );
        for (bad, why) in [
            ("/etc/shadow", "neither an inherited fd"),
            ("../x.img", "neither an inherited fd"),
            ("sub/x.img", "neither an inherited fd"),
            ("..", "neither an inherited fd"),
            (".", "neither an inherited fd"),
            ("/proc/self/fd/x", "not a file descriptor number"),
            ("/proc/self/fd/+3", "not a file descriptor number"),
        ] {
            let b = descriptor(2, vec![comp(bad, 0, true)], 512);
            is_raw(classify_bytes(&b, Path::new(P), &[3]), why);
        }
        // Version 1 reads relative paths against the working directory, not beside it.
        let v1 = descriptor(1, vec![comp("x.img", 0, false)], 512);
        is_raw(classify_bytes(&v1, Path::new(P), &[]), "only in version 2");
    }

    #[test]
    fn padded_or_odd_descriptors_are_raw() {
        // The guest-written attack: a valid descriptor plus an unknown length-delimited field
        // (field 15) inside the protobuf.
        let mut b = descriptor(2, vec![comp("/etc/shadow", 0, true)], 512);
        b.extend_from_slice(&[15 << 3 | 2, 4, 0, 0, 0, 0]);
        is_raw(classify_bytes(&b, Path::new(P), &[]), "not canonical");
        let mut b = avf([10, 11, 12, 13]);
        b.extend_from_slice(&[15 << 3 | 2, 1, 0]);
        is_raw(
            classify_bytes(&b, Path::new(P), &[10, 11, 12, 13]),
            "not canonical",
        );
        // A default-valued field written out is not canonical either.
        let mut b = avf([10, 11, 12, 13]);
        b.extend_from_slice(&[0x08, 0]);
        is_raw(
            classify_bytes(&b, Path::new(P), &[10, 11, 12, 13]),
            "not canonical",
        );
        is_raw(classify_bytes(b"raw bytes", Path::new(P), &[]), "magic");
        is_raw(
            classify_bytes(b"composite_disk\x1d\xff", Path::new(P), &[]),
            "not a protobuf",
        );
        // Canonical but invalid (no components).
        is_raw(
            classify_bytes(&descriptor(2, vec![], 512), Path::new(P), &[]),
            "no components",
        );
        let big = vec![0u8; MAX_WRITABLE_DESCRIPTOR as usize + 1];
        is_raw(classify_bytes(&big, Path::new(P), &[]), "larger");
    }

    #[test]
    fn classify_reads_the_file() {
        let dir = TempDir::new("classify");
        let mut padded = descriptor(2, vec![comp("/etc/shadow", 0, true)], 512);
        padded.push(15 << 3 | 2);
        padded.extend_from_slice(&[0x80, 0x80, 0x04]); // 65536
        padded.resize(padded.len() + 65536, 0);
        let f = RawFile::open(&dir.file("big.img", &padded), false, false).unwrap();
        is_raw(classify(&f, &[]), "larger");
        let f = RawFile::open(&dir.file("raw.img", &[0u8; 4096]), false, false).unwrap();
        is_raw(classify(&f, &[]), "magic");
        let ok = descriptor(2, vec![comp("h.img", 0, false)], 512);
        let f = RawFile::open(&dir.file("ok.img", &ok), false, false).unwrap();
        assert_eq!(classify(&f, &[]).unwrap(), WritableFormat::Composite);
    }
}
