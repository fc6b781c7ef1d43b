//! Disk images as virtio-blk serves them: raw files, and composite GPT disks assembled from
//! host files without copying them (crosvm's composite format, as AVF builds it).
//!
//! - [`raw`]: one host file, positional I/O, an OFD lock against a second VMM.
//! - [`gpt`]: the protective MBR, GPT headers and partition entries (writer and parser).
//! - [`composite`]: a disk made of components (host files, zeros, bytes in memory); the
//!   composite built from `--partition`-style configuration.
//! - [`cdisk`]: crosvm's composite descriptor file (`composite_disk\x1d` + protobuf).
//! - [`flatten`]: copying any disk into one sparse raw file; the human-readable partition table.
//! - [`tool`]: `micro-vmm disk create | inspect | flatten`.
//! - [`writable_composite`]: the rule a crosvm-compatible mode uses to accept a writable
//!   composite descriptor (AVF's instance/storage disk) without trusting guest-written bytes.
//!
//! Everything read here is untrusted: image files, descriptors, and the offsets the guest asks
//! for. Errors name the file, label or offset; nothing panics; allocations are bounded.

pub mod cdisk;
pub mod composite;
pub mod flatten;
pub mod gpt;
pub mod raw;
pub mod tool;
pub mod writable_composite;

#[cfg(test)]
pub(crate) mod testutil;

use std::io;
use std::path::{Path, PathBuf};

use crate::api::{DiskConfig, ImageFormat};

/// Bytes per sector (virtio-blk and GPT).
pub const SECTOR_SIZE: u64 = 512;

/// Errors of the disk layer. Every variant names what it is about (a file, a label, an offset).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open disk file {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("disk file {path:?} is not a regular file or block device")]
    NotAFile { path: PathBuf },
    #[error(
        "composite component {path:?} is a block device; allow it with \
         allow-block-devices=true (vmconfig: \"allow_block_devices\": true)"
    )]
    BlockDeviceComponent { path: PathBuf },
    #[error(
        "disk file {path:?} is in use: another process holds a conflicting lock on it \
         (is another VMM using this disk?)"
    )]
    Locked { path: PathBuf },
    #[error("cannot lock disk file {path:?}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{op} of {path:?} at offset {offset} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{path:?}: unsupported image format ({format}); convert it to a raw image")]
    UnsupportedFormat { path: PathBuf, format: &'static str },
    #[error("writable disk image {path:?} is {size} bytes, not a multiple of 512")]
    UnalignedImage { path: PathBuf, size: u64 },
    #[error("{len} bytes at offset {offset} are outside the disk ({disk_len} bytes)")]
    OutOfRange {
        offset: u64,
        len: u64,
        disk_len: u64,
    },
    #[error("write at offset {offset} hits {what}, which is read-only")]
    ReadOnly { offset: u64, what: String },
    #[error("partition label {label:?}: {reason}")]
    BadLabel { label: String, reason: String },
    #[error("two partitions are labelled {0:?}")]
    DuplicateLabel(String),
    #[error(
        "writable partition {label:?} ({path:?}) is {size} bytes, not a multiple of 4096 \
         (pad the file, or make the partition read-only)"
    )]
    UnalignedWritablePartition {
        label: String,
        path: PathBuf,
        size: u64,
    },
    #[error("{count} partitions given; a GPT holds at most {max}")]
    TooManyPartitions { count: usize, max: usize },
    #[error("the composite disk would be {size} bytes; its protective MBR allows at most {max}")]
    DiskTooLarge { size: u64, max: u64 },
    #[error(
        "partitions {first:?} and {second:?} are both {path:?}: a file opened writable can back \
         only one partition"
    )]
    SharedWritableFile {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("{disk}: {reason}")]
    Layout { disk: String, reason: String },
    #[error("composite descriptor {path:?}: {reason}")]
    Descriptor { path: PathBuf, reason: String },
    #[error("composite descriptor {path:?}: bad protobuf: {source}")]
    DescriptorDecode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("composite descriptor {path:?}: version {version} is not supported (at most {max})")]
    DescriptorVersion {
        path: PathBuf,
        version: u64,
        max: u64,
    },
    #[error("composite descriptor {path:?}: component {component:?} at offset {offset}: {source}")]
    Component {
        path: PathBuf,
        component: PathBuf,
        offset: u64,
        source: Box<DiskError>,
    },
    #[error("composite descriptor {path:?}: composites nested more than {max} levels deep")]
    NestingTooDeep { path: PathBuf, max: usize },
    #[error("GPT of {what}: {reason}")]
    Gpt { what: String, reason: String },
    #[error("disk spec {path:?}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("cannot write {path:?}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("path {path:?} cannot go into a composite descriptor: it is not valid UTF-8")]
    NonUtf8Path { path: PathBuf },
    #[error("output {output:?} is {input:?}, a file the input disk reads from")]
    OutputIsInput { output: PathBuf, input: PathBuf },
}

/// A disk as a virtio-blk device serves it. Thread-safe: positional I/O only.
pub trait DiskBackend: Send + Sync {
    /// Guest-visible size in bytes (fixed when opened).
    fn len(&self) -> u64;
    fn is_writable(&self) -> bool;
    /// Reads exactly `buf.len()` bytes at `offset`; a range past the end or a short host read
    /// is an error (never silently zero-filled).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;
    /// Writes all of `buf` at `offset`; error if the disk (or the component) is read-only or
    /// the range is past the end.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError>;
    /// fdatasync every host file written since the last flush.
    fn flush(&self) -> Result<(), DiskError>;
    /// Up to 20 bytes identifying the disk, for VIRTIO_BLK_T_GET_ID (NUL-padded).
    fn id(&self) -> [u8; 20];

    /// True for a zero-byte disk.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens the disk a configuration names.
///
/// `Image`: opened as [`open_image`] says: in the format the user named; without one, a
/// writable image is raw (never probed: its bytes are the guest's) and a read-only one is
/// recognised by its magic (a crosvm composite descriptor; qcow2, Android sparse and zstd are
/// refused; anything else is raw). `Composite`: a GPT disk built in memory over the partition
/// files (no temporary files, no descriptor to parse).
pub fn open(cfg: &DiskConfig) -> Result<Box<dyn DiskBackend>, DiskError> {
    match cfg {
        DiskConfig::Image {
            path,
            writable,
            format,
            allow_block_devices,
        } => {
            let mode = OpenMode {
                writable: *writable,
                lock: true,
                allow_block_devices: *allow_block_devices,
            };
            Ok(match open_image(path, mode, *format)? {
                Image::Raw(d) => Box::new(d),
                Image::Composite(d) => Box::new(d),
            })
        }
        DiskConfig::Composite {
            partitions,
            writable,
        } => {
            let mode = OpenMode {
                writable: *writable,
                lock: true,
                allow_block_devices: false,
            };
            Ok(Box::new(composite::CompositeDisk::from_partitions(
                partitions, mode,
            )?))
        }
    }
}

/// How a disk's host files are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    /// Open files that may be written read-write (otherwise everything is read-only).
    pub writable: bool,
    /// Take OFD locks (write lock on files opened read-write, read lock otherwise). Only the
    /// read-only `inspect` tool skips them, so it works while a VM runs.
    pub lock: bool,
    /// Let a composite descriptor name block devices as components. Off unless the user
    /// says so (`allow-block-devices=true`, vmconfig `"allow_block_devices": true`): a
    /// descriptor is a file's bytes, and should not reach a host disk by surprise.
    pub allow_block_devices: bool,
}

impl OpenMode {
    /// Read-only with locks, no block-device components.
    pub const READ_ONLY: OpenMode = OpenMode {
        writable: false,
        lock: true,
        allow_block_devices: false,
    };
}

/// An image file opened by [`open_image`].
pub enum Image {
    Raw(raw::RawDisk),
    Composite(composite::CompositeDisk),
}

impl Image {
    pub fn backend(&self) -> &dyn DiskBackend {
        match self {
            Image::Raw(d) => d,
            Image::Composite(d) => d,
        }
    }
}

/// Opens a whole-disk image file.
///
/// `format` is the format the user (or the code that built the file) named. Without one, a
/// read-only image is recognised by its magic and a **writable image is raw**: a writable
/// image holds bytes the guest wrote, so they must never decide how micro-vmm opens it (a
/// guest could otherwise write a composite descriptor naming a host file into its disk and
/// reach that file on the next boot; QEMU's raw-probing rule). A raw image is opened (and
/// locked) as `mode` says; a composite descriptor is opened read-only with a read lock (it is
/// never written), its components as `mode` and the descriptor say.
pub fn open_image(
    path: &Path,
    mode: OpenMode,
    format: Option<ImageFormat>,
) -> Result<Image, DiskError> {
    let probe = raw::RawFile::open(path, false, false)?;
    let detected = Format::detect(&probe.head()?);
    let format = match format {
        Some(ImageFormat::Raw) => Format::Raw,
        None if mode.writable => Format::Raw,
        None => detected,
        Some(ImageFormat::Composite) if detected == Format::Composite => Format::Composite,
        Some(ImageFormat::Composite) => {
            return Err(DiskError::Descriptor {
                path: path.to_path_buf(),
                reason: format!(
                    "format=composite was given but the file is not a composite descriptor \
                     (it looks {})",
                    detected.name()
                ),
            });
        }
    };
    match format {
        Format::Raw if !mode.writable => {
            if mode.lock {
                probe.lock()?;
            }
            Ok(Image::Raw(raw::RawDisk::new(probe)?))
        }
        Format::Raw => {
            let file = raw::RawFile::open(path, true, mode.lock)?;
            if file.dev_ino() != probe.dev_ino() {
                return Err(DiskError::Open {
                    path: path.to_path_buf(),
                    source: io::Error::other("the file was replaced while it was being opened"),
                });
            }
            Ok(Image::Raw(raw::RawDisk::new(file)?))
        }
        Format::Composite => {
            if mode.lock {
                probe.lock()?;
            }
            let mut budget = cdisk::ComponentBudget::default();
            Ok(Image::Composite(cdisk::open_descriptor(
                probe,
                mode,
                0,
                &mut budget,
            )?))
        }
        other => Err(DiskError::UnsupportedFormat {
            path: path.to_path_buf(),
            format: other.name(),
        }),
    }
}

/// Image formats recognised by their first bytes (as crosvm's `disk.rs` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Composite,
    Qcow2,
    AndroidSparse,
    Zstd,
}

/// How many bytes [`Format::detect`] looks at.
pub const FORMAT_MAGIC_LEN: usize = 16;

impl Format {
    /// Recognises a format from the first bytes of a file (fewer than 16 is fine).
    pub fn detect(head: &[u8]) -> Format {
        let u32_at0 = |be: bool| {
            head.get(..4).map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                if be {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            })
        };
        if head.starts_with(cdisk::CDISK_MAGIC) {
            Format::Composite
        } else if u32_at0(true) == Some(0x5146_49fb) {
            Format::Qcow2
        } else if u32_at0(false) == Some(0xed26_ff3a) {
            Format::AndroidSparse
        } else if let Some(m) = u32_at0(false)
            && (m == 0xfd2f_b528 || (0x184d_2a50..=0x184d_2a5f).contains(&m))
        {
            Format::Zstd
        } else {
            Format::Raw
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Composite => "crosvm composite",
            Format::Qcow2 => "qcow2",
            Format::AndroidSparse => "Android sparse",
            Format::Zstd => "zstd-compressed",
        }
    }
}

/// Checks that `len` bytes at `offset` lie inside a disk of `disk_len` bytes.
pub(crate) fn check_range(offset: u64, len: usize, disk_len: u64) -> Result<(), DiskError> {
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= disk_len => Ok(()),
        _ => Err(DiskError::OutOfRange {
            offset,
            len,
            disk_len,
        }),
    }
}

/// A GET_ID value from a name: its first 20 bytes (cut at a character boundary), NUL-padded.
pub(crate) fn id_from_name(name: &str) -> [u8; 20] {
    let mut id = [0u8; 20];
    let mut end = name.len().min(id.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].copy_from_slice(&name.as_bytes()[..end]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PartitionConfig;
    use testutil::TempDir;

    #[test]
    fn formats_by_magic() {
        assert_eq!(
            Format::detect(b"composite_disk\x1d\x08\x02"),
            Format::Composite
        );
        assert_eq!(Format::detect(b"composite_disk"), Format::Raw);
        assert_eq!(Format::detect(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(
            Format::detect(&[0x3a, 0xff, 0x26, 0xed]),
            Format::AndroidSparse
        );
        assert_eq!(Format::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Format::Zstd);
        assert_eq!(Format::detect(&[0x50, 0x2a, 0x4d, 0x18]), Format::Zstd);
        assert_eq!(Format::detect(&[0; 16]), Format::Raw);
        assert_eq!(Format::detect(b""), Format::Raw);
        assert_eq!(Format::detect(b"QF"), Format::Raw);
    }

    #[test]
    fn ranges() {
        assert!(check_range(0, 512, 512).is_ok());
        assert!(check_range(512, 0, 512).is_ok());
        assert!(check_range(1, 512, 512).is_err());
        assert!(check_range(u64::MAX, 1, u64::MAX).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(&id_from_name("a.img")[..6], b"a.img\0");
        assert_eq!(
            &id_from_name("0123456789abcdefghijKLM"),
            b"0123456789abcdefghij"
        );
        // "é" is two bytes: the cut never splits a character.
        let id = id_from_name("0123456789abcdefghé");
        assert_eq!(&id, "0123456789abcdefghé".as_bytes());
        let id = id_from_name("0123456789abcdefghiéé");
        assert_eq!(&id, b"0123456789abcdefghi\0");
    }

    #[test]
    fn open_detects_formats() {
        let dir = TempDir::new("open-formats");
        let raw = dir.file("raw.img", &[7u8; 4096]);
        let d = open(&DiskConfig::image(raw.clone(), true)).unwrap();
        assert_eq!(d.len(), 4096);
        assert!(d.is_writable());
        drop(d);

        let mut q = b"QFI\xfb".to_vec();
        q.resize(1024, 0);
        let qcow = dir.file("q.qcow2", &q);
        let e = open(&DiskConfig::image(qcow, false)).err().unwrap();
        assert!(
            e.to_string().contains("unsupported image format (qcow2)"),
            "{e}"
        );

        let sparse = dir.file("s.img", &[0x3a, 0xff, 0x26, 0xed, 1, 0, 0, 0]);
        assert!(matches!(
            open(&DiskConfig::image(sparse, false)),
            Err(DiskError::UnsupportedFormat {
                format: "Android sparse",
                ..
            })
        ));

        let missing = open(&DiskConfig::image(dir.path().join("missing.img"), false))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("missing.img"), "{missing}");

        // A composite descriptor written by cdisk opens as a composite.
        let part = dir.file("p.img", &[1u8; 4096]);
        let desc = dir.path().join("c.img");
        cdisk::write_composite(
            &[PartitionConfig {
                label: "p".into(),
                path: part,
                writable: false,
            }],
            &desc,
        )
        .unwrap();
        let d = open(&DiskConfig::image(desc, false)).unwrap();
        assert_eq!(d.len(), 20480 + 4096 + 20480);
        let mut b = [0u8; 4096];
        d.read_exact_at(&mut b, 20480).unwrap();
        assert_eq!(b, [1u8; 4096]);
    }

    /// The guest-written descriptor of issue 12: `composite_disk\x1d` + a protobuf naming
    /// `target` as a READ_WRITE component, padded inside the protobuf with an unknown
    /// length-delimited field (field 15) to exactly `size` bytes.
    fn guest_written_descriptor(target: &Path, size: usize) -> Vec<u8> {
        let mut b = one_component_descriptor(
            target.to_str().unwrap(),
            cdisk::proto::ReadWriteCapability::ReadWrite as i32,
            4096,
        );
        // Key (field 15, wire type 2), a 3-byte varint length, then the padding.
        let pad = size - b.len() - 4;
        b.push(15 << 3 | 2);
        b.extend_from_slice(&[
            (pad & 0x7f) as u8 | 0x80,
            ((pad >> 7) & 0x7f) as u8 | 0x80,
            (pad >> 14) as u8,
        ]);
        b.resize(size, 0xee);
        assert_eq!(b.len(), size);
        b
    }

    /// A version-2 composite descriptor (magic and protobuf) with one component, `path`, of
    /// `length` bytes.
    fn one_component_descriptor(path: &str, read_write_capability: i32, length: u64) -> Vec<u8> {
        use prost::Message;
        let msg = cdisk::proto::CompositeDisk {
            version: 2,
            component_disks: vec![cdisk::proto::ComponentDisk {
                file_path: path.into(),
                offset: 0,
                read_write_capability,
                file_offset: 0,
            }],
            length,
        };
        let mut b = cdisk::CDISK_MAGIC.to_vec();
        msg.encode(&mut b).unwrap();
        b
    }

    /// Whether this process has `path` open (any fd in /proc/self/fd resolving to it).
    fn has_open(path: &Path) -> bool {
        let path = std::fs::canonicalize(path).unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|l| l == path)
    }

    #[test]
    fn guest_written_descriptor_in_a_writable_image_is_raw() {
        let dir = TempDir::new("guest-descriptor");
        let target = dir.file("host-secret.img", &[0x5a; 4096]);
        let bytes = guest_written_descriptor(&target, 64 << 10);
        let rw = dir.file("rw.img", &bytes);

        // The descriptor is a real one: probed read-only, it would reach the host file.
        let ro = open(&DiskConfig::image(rw.clone(), false)).unwrap();
        assert_eq!(ro.len(), 4096);
        assert!(has_open(&target));
        drop(ro);
        assert!(!has_open(&target));

        // As --rwdisk (no format named): raw bytes, the file's size, no other file opened.
        let d = open(&DiskConfig::image(rw.clone(), true)).unwrap();
        assert_eq!(d.len(), 64 << 10);
        assert!(d.is_writable());
        assert!(!has_open(&target));
        let mut head = vec![0u8; 512];
        d.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, bytes[..512]);
        d.write_all_at(&[1u8; 512], 0).unwrap();
        drop(d);
        assert_eq!(std::fs::read(&target).unwrap(), vec![0x5a; 4096]);
        assert_eq!(std::fs::read(&rw).unwrap()[..512], [1u8; 512]);

        // The crosvm-compatible rule serves it as raw too.
        std::fs::write(&rw, &bytes).unwrap();
        let f = raw::RawFile::open(&rw, false, false).unwrap();
        assert!(matches!(
            writable_composite::classify(&f, &[]).unwrap(),
            writable_composite::WritableFormat::Raw { .. }
        ));
    }

    #[test]
    fn named_formats() {
        let dir = TempDir::new("named-formats");
        let part = dir.file("p.img", &[1u8; 4096]);
        let desc = dir.path().join("c.img");
        cdisk::write_composite(
            &[PartitionConfig {
                label: "p".into(),
                path: part,
                writable: true,
            }],
            &desc,
        )
        .unwrap();
        let with = |writable, format| DiskConfig::Image {
            path: desc.clone(),
            writable,
            format,
            allow_block_devices: false,
        };
        // The user names the format: a writable composite opens as one.
        let d = open(&with(true, Some(ImageFormat::Composite))).unwrap();
        assert_eq!(d.len(), 20480 + 4096 + 20480);
        d.write_all_at(&[2u8; 512], 20480).unwrap();
        drop(d);
        // format=raw on a read-only descriptor: its bytes, not its components.
        let size = std::fs::metadata(&desc).unwrap().len();
        let d = open(&with(false, Some(ImageFormat::Raw))).unwrap();
        assert_eq!(d.len(), size - size % 512);
        drop(d);
        // format=composite on something that is not a descriptor is a clear error.
        let raw = dir.file("raw.img", &[0u8; 4096]);
        let e = open(&DiskConfig::Image {
            path: raw,
            writable: true,
            format: Some(ImageFormat::Composite),
            allow_block_devices: false,
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("not a composite descriptor"), "{e}");
        // A writable qcow2-looking file without a format is raw (never probed).
        let mut q = b"QFI\xfb".to_vec();
        q.resize(4096, 0);
        let qcow = dir.file("q.img", &q);
        assert_eq!(open(&DiskConfig::image(qcow, true)).unwrap().len(), 4096);
    }

    #[test]
    fn block_device_components_need_permission() {
        let Some(dev) = (0..8)
            .map(|i| PathBuf::from(format!("/dev/loop{i}")))
            .find(|p| std::fs::File::open(p).is_ok())
        else {
            eprintln!("no readable /dev/loopN here; skipping");
            return;
        };
        let dir = TempDir::new("block-components");
        let b = one_component_descriptor(dev.to_str().unwrap(), 0, 512);
        let desc = dir.file("d.img", &b);
        let e = open(&DiskConfig::image(desc.clone(), false)).err().unwrap();
        assert!(e.to_string().contains("is a block device; allow it"), "{e}");
        // Allowed: the block device is opened; a detached loop device is then too small for
        // its 512 bytes, so any result but the block-device refusal is right.
        let r = open(&DiskConfig::Image {
            path: desc,
            writable: false,
            format: None,
            allow_block_devices: true,
        });
        if let Err(e) = r {
            assert!(!e.to_string().contains("is a block device"), "{e}");
        }
    }

    #[test]
    fn a_fifo_component_is_refused_without_hanging() {
        let dir = TempDir::new("fifo-component");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let b = one_component_descriptor("fifo", 0, 512);
        let desc = dir.file("d.img", &b);
        let e = open(&DiskConfig::image(desc, false)).err().unwrap();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn open_composite_config() {
        let dir = TempDir::new("open-composite");
        let a = dir.file("a.img", &[0xaa; 1000]);
        let d = open(&DiskConfig::Composite {
            partitions: vec![PartitionConfig {
                label: "a".into(),
                path: a,
                writable: false,
            }],
            writable: false,
        })
        .unwrap();
        assert_eq!(d.len(), 20480 + 4096 + 20480);
        assert!(!d.is_writable());
    }
}
