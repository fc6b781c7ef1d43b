//! crosvm's composite disk descriptor: the 15-byte magic `composite_disk\x1d`, then a
//! `CompositeDisk` protobuf running to the end of the file (proto3, crosvm's
//! `cdisk_spec.proto`).
//!
//! Reading follows crosvm: versions up to 2 (version 2 joins relative paths onto the
//! descriptor's directory; older versions use them as written), components sorted by offset,
//! each one's length running to the next one's offset (the last one's to `length`), two
//! components at one offset rejected, a component writable only when it is READ_WRITE and the
//! disk is opened writable, nested composites at most 10 deep. Stricter than crosvm: the
//! descriptor is at most 1 MiB and 1024 components (across all nesting levels), the first
//! component must start at 0, every component file must hold the bytes mapped to it, and a
//! writable component must be a raw file (a guest could otherwise write a descriptor into its
//! own disk and have the next boot open host files through it).
//!
//! Writing ([`write_composite`]) produces what crosvm's `create_composite_disk` does with the
//! current upstream footer: `NAME.img` plus `NAME-header.img`, `NAME-footer.img` and a 4 KiB
//! `NAME-zero.img` filler next to it (referenced by relative paths, version 2); partitions are
//! referenced by absolute path, so crosvm itself can open the result.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use prost::Message;
use uuid::Uuid;

use super::composite::{self, Component, CompositeDisk, Origin, Source};
use super::raw::RawFile;
use super::{DiskError, Format, OpenMode, id_from_name};
use crate::api::PartitionConfig;

/// The descriptor's magic: "composite_disk" and 0x1D.
pub const CDISK_MAGIC: &[u8] = b"composite_disk\x1d";
/// The newest descriptor version read and the one written.
pub const COMPOSITE_DISK_VERSION: u64 = 2;
/// Largest descriptor file read.
pub const MAX_DESCRIPTOR_SIZE: u64 = 1 << 20;
/// Most composites nested inside each other (crosvm's limit).
pub const MAX_NESTING_DEPTH: usize = 10;
/// Most components in one disk, counting every nesting level.
pub const MAX_COMPONENTS: usize = 1024;
/// Size of the zero filler file written next to a descriptor.
pub const ZERO_FILLER_SIZE: u64 = 1 << 12;

/// The protobuf messages, with crosvm's field numbers.
pub mod proto {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ReadWriteCapability {
        ReadOnly = 0,
        ReadWrite = 1,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ComponentDisk {
        #[prost(string, tag = "1")]
        pub file_path: String,
        /// Where the component starts in the guest-visible disk.
        #[prost(uint64, tag = "2")]
        pub offset: u64,
        #[prost(enumeration = "ReadWriteCapability", tag = "3")]
        pub read_write_capability: i32,
        /// Where the component starts inside its file (upstream crosvm only, 2026).
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompositeDisk {
        #[prost(uint64, tag = "1")]
        pub version: u64,
        #[prost(message, repeated, tag = "2")]
        pub component_disks: Vec<ComponentDisk>,
        /// Total guest-visible size.
        #[prost(uint64, tag = "3")]
        pub length: u64,
    }
}

/// Counts components opened so far across nesting levels, against [`MAX_COMPONENTS`].
#[derive(Debug, Default)]
pub struct ComponentBudget {
    used: usize,
}

/// One component as the descriptor describes it, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// The path resolved as crosvm would (joined onto the descriptor's directory for v2).
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub read_write: bool,
    pub file_offset: u64,
}

/// A parsed and checked descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub version: u64,
    pub length: u64,
    /// Sorted by offset, contiguous from 0 to `length`.
    pub components: Vec<ComponentSpec>,
}

/// Parses descriptor bytes (magic included). `path` is the descriptor's own path: it names it
/// in errors and anchors relative component paths.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Descriptor, DiskError> {
    let bad = |reason: String| DiskError::Descriptor {
        path: path.to_path_buf(),
        reason,
    };
    let body = bytes
        .strip_prefix(CDISK_MAGIC)
        .ok_or_else(|| bad("no composite_disk magic at the start".into()))?;
    let count = count_components(body).map_err(|e| bad(format!("bad protobuf: {e}")))?;
    if count > MAX_COMPONENTS {
        return Err(bad(format!(
            "{count} components; at most {MAX_COMPONENTS} are accepted"
        )));
    }
    let msg = proto::CompositeDisk::decode(body).map_err(|source| DiskError::DescriptorDecode {
        path: path.to_path_buf(),
        source,
    })?;
    if msg.version > COMPOSITE_DISK_VERSION {
        return Err(DiskError::DescriptorVersion {
            path: path.to_path_buf(),
            version: msg.version,
            max: COMPOSITE_DISK_VERSION,
        });
    }
    if msg.length > i64::MAX as u64 {
        return Err(bad(format!("length {} is too large", msg.length)));
    }
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut comps = msg.component_disks;
    if comps.is_empty() {
        return Err(bad("no components".into()));
    }
    comps.sort_by_key(|c| c.offset);
    let mut components = Vec::with_capacity(comps.len());
    for (i, c) in comps.iter().enumerate() {
        let next = comps.get(i + 1).map_or(msg.length, |n| n.offset);
        if c.offset >= msg.length {
            return Err(bad(format!(
                "component {:?} starts at offset {}, not before the disk's length {}",
                c.file_path, c.offset, msg.length
            )));
        }
        if next == c.offset {
            return Err(bad(format!(
                "two components start at offset {} ({:?} and {:?})",
                c.offset,
                c.file_path,
                comps[i + 1].file_path
            )));
        }
        if i == 0 && c.offset != 0 {
            return Err(bad(format!(
                "the first component starts at offset {}, not 0",
                c.offset
            )));
        }
        if c.file_path.is_empty() {
            return Err(bad(format!(
                "the component at offset {} has no path",
                c.offset
            )));
        }
        let read_write = match proto::ReadWriteCapability::try_from(c.read_write_capability) {
            Ok(cap) => cap == proto::ReadWriteCapability::ReadWrite,
            Err(_) => {
                return Err(bad(format!(
                    "component {:?} has an unknown read_write_capability {}",
                    c.file_path, c.read_write_capability
                )));
            }
        };
        let len = next - c.offset;
        if c.file_offset.checked_add(len).is_none() {
            return Err(bad(format!(
                "component {:?}: file offset {} is too large",
                c.file_path, c.file_offset
            )));
        }
        let p = Path::new(&c.file_path);
        components.push(ComponentSpec {
            path: if msg.version >= 2 {
                base.join(p)
            } else {
                p.to_path_buf()
            },
            offset: c.offset,
            len,
            read_write,
            file_offset: c.file_offset,
        });
    }
    Ok(Descriptor {
        version: msg.version,
        length: msg.length,
        components,
    })
}

/// Counts the top-level `component_disks` fields without decoding them, so a descriptor with
/// a huge number of (tiny) components is rejected before anything is allocated for them.
fn count_components(mut b: &[u8]) -> Result<usize, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn skip(b: &mut &[u8], len: u64) -> Result<(), String> {
        match usize::try_from(len) {
            Ok(n) if n <= b.len() => {
                *b = &b[n..];
                Ok(())
            }
            _ => Err(format!("a field of {len} bytes runs past the end")),
        }
    }
    let mut n = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => skip(&mut b, 8)?,
            2 => {
                let len = varint(&mut b)?;
                skip(&mut b, len)?;
                if key >> 3 == 2 {
                    n += 1;
                }
            }
            5 => skip(&mut b, 4)?,
            wt => return Err(format!("unexpected wire type {wt}")),
        }
    }
    Ok(n)
}

/// Reads a descriptor file (at most [`MAX_DESCRIPTOR_SIZE`] bytes).
pub fn read_descriptor(file: &RawFile) -> Result<Descriptor, DiskError> {
    let size = file.size();
    if size > MAX_DESCRIPTOR_SIZE {
        return Err(DiskError::Descriptor {
            path: file.path().to_path_buf(),
            reason: format!("{size} bytes is too large (at most {MAX_DESCRIPTOR_SIZE})"),
        });
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_at(&mut bytes, 0)?;
    parse(&bytes, file.path())
}

/// Opens the composite a descriptor describes. `depth` is how many composites enclose it.
pub fn open_descriptor(
    file: RawFile,
    mode: OpenMode,
    depth: usize,
    budget: &mut ComponentBudget,
) -> Result<CompositeDisk, DiskError> {
    let desc_path = file.path().to_path_buf();
    if depth >= MAX_NESTING_DEPTH {
        return Err(DiskError::NestingTooDeep {
            path: desc_path,
            max: MAX_NESTING_DEPTH,
        });
    }
    let d = read_descriptor(&file)?;
    budget.used += d.components.len();
    if budget.used > MAX_COMPONENTS {
        return Err(DiskError::Descriptor {
            path: desc_path,
            reason: format!("more than {MAX_COMPONENTS} components counting nested composites"),
        });
    }
    let mut components = Vec::with_capacity(d.components.len());
    for c in &d.components {
        let wrap = |source: DiskError| DiskError::Component {
            path: desc_path.clone(),
            component: c.path.clone(),
            offset: c.offset,
            source: Box::new(source),
        };
        let source = open_component(c, mode, depth, budget).map_err(wrap)?;
        components.push(
            Component::new(c.offset, c.len, source)
                .read_write(c.read_write)
                .described(format!("{:?}", c.path)),
        );
    }
    let name = format!("composite disk {desc_path:?}");
    let id = id_from_name(
        &desc_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    Ok(CompositeDisk::new(components, name)?
        .with_id(id)
        .with_origin(Origin::Descriptor {
            file,
            version: d.version,
        }))
}

fn open_component(
    c: &ComponentSpec,
    mode: OpenMode,
    depth: usize,
    budget: &mut ComponentBudget,
) -> Result<Source, DiskError> {
    let writable = c.read_write && mode.writable;
    // Locked once the format is known, so a misuse is reported as such, not as a lock clash.
    let file = RawFile::open(&c.path, writable, false)?;
    if file.is_block_device() && !mode.allow_block_devices {
        return Err(DiskError::BlockDeviceComponent {
            path: c.path.clone(),
        });
    }
    let lock = |file: &RawFile| if mode.lock { file.lock() } else { Ok(()) };
    match Format::detect(&file.head()?) {
        Format::Raw => {
            lock(&file)?;
            Ok(Source::File {
                file,
                file_offset: c.file_offset,
            })
        }
        Format::Composite if writable => Err(DiskError::Descriptor {
            path: c.path.clone(),
            reason: "a writable component must be a raw file, not a composite".into(),
        }),
        Format::Composite if c.file_offset != 0 => Err(DiskError::Descriptor {
            path: c.path.clone(),
            reason: "a nested composite cannot have a file offset".into(),
        }),
        Format::Composite => {
            lock(&file)?;
            Ok(Source::Nested(Box::new(open_descriptor(
                file,
                mode,
                depth + 1,
                budget,
            )?)))
        }
        other => Err(DiskError::UnsupportedFormat {
            path: c.path.clone(),
            format: other.name(),
        }),
    }
}

/// The files [`write_composite`] writes for a descriptor at `out`: `out` itself and, in its
/// directory, `STEM-header.img`, `STEM-footer.img`, `STEM-zero.img` (STEM = `out`'s file name
/// without its extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositeFiles {
    pub descriptor: PathBuf,
    pub header: PathBuf,
    pub footer: PathBuf,
    pub zero_filler: PathBuf,
}

impl CompositeFiles {
    pub fn for_descriptor(out: &Path) -> Result<CompositeFiles, DiskError> {
        let stem = out
            .file_stem()
            .ok_or_else(|| DiskError::Write {
                path: out.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
            })?
            .to_str()
            .ok_or_else(|| DiskError::NonUtf8Path {
                path: out.to_path_buf(),
            })?;
        let sibling = |suffix: &str| out.with_file_name(format!("{stem}-{suffix}.img"));
        Ok(CompositeFiles {
            descriptor: out.to_path_buf(),
            header: sibling("header"),
            footer: sibling("footer"),
            zero_filler: sibling("zero"),
        })
    }
}

/// Writes a crosvm composite disk for `partitions` at `out` (see the module docs) and returns
/// the guest-visible size. Partition files must exist; their paths are made absolute.
pub fn write_composite(partitions: &[PartitionConfig], out: &Path) -> Result<u64, DiskError> {
    let files = CompositeFiles::for_descriptor(out)?;
    let mut parts = Vec::with_capacity(partitions.len());
    let mut inputs = Vec::with_capacity(partitions.len());
    for p in partitions {
        let path = std::fs::canonicalize(&p.path).map_err(|source| DiskError::Open {
            path: p.path.clone(),
            source,
        })?;
        if path.to_str().is_none() {
            return Err(DiskError::NonUtf8Path { path });
        }
        inputs.push(RawFile::open(&path, false, false)?);
        parts.push(PartitionConfig { path, ..p.clone() });
    }
    let sizes: Vec<u64> = inputs.iter().map(RawFile::size).collect();
    let layout = composite::plan(&parts, &sizes, Uuid::new_v4())?;
    let msg = descriptor_for(&layout, &files)?;
    let mut body = CDISK_MAGIC.to_vec();
    msg.encode(&mut body).map_err(|e| DiskError::Write {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;

    // Open (and lock) all four outputs before changing any, so a failure leaves the old
    // files as they were; refuse to overwrite a partition file.
    let header = open_output(&files.header, &inputs)?;
    let footer = open_output(&files.footer, &inputs)?;
    let zero = open_output(&files.zero_filler, &inputs)?;
    let desc = open_output(&files.descriptor, &inputs)?;
    write_file(&header, &files.header, &layout.gpt.header)?;
    write_file(&footer, &files.footer, &layout.gpt.footer)?;
    zero.set_len(0)
        .and_then(|()| zero.set_len(ZERO_FILLER_SIZE))
        .map_err(|source| DiskError::Write {
            path: files.zero_filler.clone(),
            source,
        })?;
    write_file(&desc, &files.descriptor, &body)?;
    Ok(layout.disk_size())
}

/// The descriptor message for a layout: header, partitions (with zero filler for padding;
/// only the filler for an empty file), footer.
fn descriptor_for(
    layout: &composite::Layout,
    files: &CompositeFiles,
) -> Result<proto::CompositeDisk, DiskError> {
    let rel = |p: &Path| -> Result<String, DiskError> {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| DiskError::NonUtf8Path {
                path: p.to_path_buf(),
            })
    };
    let ro = proto::ReadWriteCapability::ReadOnly as i32;
    let component = |file_path: String, offset: u64, rw: bool| proto::ComponentDisk {
        file_path,
        offset,
        read_write_capability: if rw {
            proto::ReadWriteCapability::ReadWrite as i32
        } else {
            ro
        },
        file_offset: 0,
    };
    let zero = rel(&files.zero_filler)?;
    let mut comps = vec![component(rel(&files.header)?, 0, false)];
    for p in &layout.partitions {
        if p.size > 0 {
            let path = p.path.to_str().ok_or_else(|| DiskError::NonUtf8Path {
                path: p.path.clone(),
            })?;
            comps.push(component(path.to_string(), p.offset, p.writable));
        }
        if p.span > p.size {
            comps.push(component(zero.clone(), p.offset + p.size, false));
        }
    }
    comps.push(component(rel(&files.footer)?, layout.footer_offset, false));
    Ok(proto::CompositeDisk {
        version: COMPOSITE_DISK_VERSION,
        component_disks: comps,
        length: layout.disk_size(),
    })
}

/// Opens an output file without truncating it, checks that it is none of `inputs`, and
/// write-locks it.
fn open_output(path: &Path, inputs: &[RawFile]) -> Result<File, DiskError> {
    let f = open_output_file(path)?;
    let meta = f.metadata().map_err(|source| DiskError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    check_not_input(path, &meta, inputs.iter())?;
    super::raw::lock_file(&f, path, true)?;
    Ok(f)
}

pub(crate) fn open_output_file(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| DiskError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Errors if the file `meta` describes is one of `inputs`.
pub(crate) fn check_not_input<'a>(
    path: &Path,
    meta: &std::fs::Metadata,
    mut inputs: impl Iterator<Item = &'a RawFile>,
) -> Result<(), DiskError> {
    use std::os::unix::fs::MetadataExt;
    match inputs.find(|f| f.dev_ino() == (meta.dev(), meta.ino())) {
        Some(f) => Err(DiskError::OutputIsInput {
            output: path.to_path_buf(),
            input: f.path().to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn write_file(f: &File, path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    use std::os::unix::fs::FileExt;
    f.set_len(0)
        .and_then(|()| f.write_all_at(bytes, 0))
        .and_then(|()| f.sync_data())
        .map_err(|source| DiskError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::{TempDir, pattern};
    use crate::disk::{DiskBackend, gpt};

    const RO: OpenMode = OpenMode {
        writable: false,
        lock: true,
        allow_block_devices: false,
    };
    const RW: OpenMode = OpenMode {
        writable: true,
        lock: true,
        allow_block_devices: false,
    };

    fn encode(msg: &proto::CompositeDisk) -> Vec<u8> {
        let mut b = CDISK_MAGIC.to_vec();
        msg.encode(&mut b).unwrap();
        b
    }

    fn comp(path: &str, offset: u64, rw: bool) -> proto::ComponentDisk {
        proto::ComponentDisk {
            file_path: path.into(),
            offset,
            read_write_capability: rw as i32,
            file_offset: 0,
        }
    }

    fn open_path(p: &Path, mode: OpenMode) -> Result<CompositeDisk, DiskError> {
        let f = RawFile::open(p, mode.writable, mode.lock)?;
        open_descriptor(f, mode, 0, &mut ComponentBudget::default())
    }

    #[test]
    fn wire_format() {
        // Proto3 defaults are not emitted; field numbers and types as crosvm's.
        let msg = proto::CompositeDisk {
            version: 2,
            component_disks: vec![comp("h", 0, false), comp("p", 0x5000, true)],
            length: 0x6000,
        };
        let b = encode(&msg);
        assert_eq!(&b[..15], b"composite_disk\x1d");
        assert_eq!(
            &b[15..],
            &[
                0x08, 2, // version
                0x12, 3, 0x0a, 1, b'h', // component: file_path only
                0x12, 9, 0x0a, 1, b'p', 0x10, 0x80, 0xa0, 0x01, 0x18, 1, // path, offset, RW
                0x18, 0x80, 0xc0, 0x01 // length
            ][..]
        );
        let d = parse(&b, Path::new("/d/x.img")).unwrap();
        assert_eq!(d.components[1].path, Path::new("/d/p"));
        assert_eq!(d.components[1].len, 0x1000);
        assert!(d.components[1].read_write);
        assert!(!d.components[0].read_write);
    }

    #[test]
    fn parse_sorts_and_derives_lengths() {
        let msg = proto::CompositeDisk {
            version: 1,
            component_disks: vec![
                comp("c", 300, false),
                comp("a", 0, false),
                comp("b", 100, true),
            ],
            length: 1000,
        };
        let d = parse(&encode(&msg), Path::new("/x/desc")).unwrap();
        let got: Vec<(String, u64, u64)> = d
            .components
            .iter()
            .map(|c| (c.path.display().to_string(), c.offset, c.len))
            .collect();
        // Version 1: paths as written.
        assert_eq!(
            got,
            [
                ("a".to_string(), 0, 100),
                ("b".to_string(), 100, 200),
                ("c".to_string(), 300, 700)
            ]
        );
        // Version 2: joined onto the descriptor's directory; absolute paths stay.
        let msg = proto::CompositeDisk {
            version: 2,
            component_disks: vec![comp("a", 0, false), comp("/proc/self/fd/3", 100, false)],
            length: 1000,
        };
        let d = parse(&encode(&msg), Path::new("desc.img")).unwrap();
        assert_eq!(d.components[0].path, Path::new("./a"));
        assert_eq!(d.components[1].path, Path::new("/proc/self/fd/3"));
    }

    #[test]
    fn parse_rejects_corrupt_descriptors() {
        let p = Path::new("/d/bad.img");
        let good = proto::CompositeDisk {
            version: 2,
            component_disks: vec![comp("a", 0, false), comp("b", 512, false)],
            length: 1024,
        };
        let check = |bytes: &[u8], want: &str| {
            let e = parse(bytes, p).unwrap_err();
            let s = e.to_string();
            assert!(s.contains(want), "{s:?} does not mention {want:?}");
            assert!(s.contains("bad.img"), "{s}");
        };
        assert!(parse(&encode(&good), p).is_ok());

        let mut b = encode(&good);
        b[0] = b'C';
        check(&b, "magic");
        check(b"composite_disk", "magic");
        check(
            &encode(&proto::CompositeDisk {
                version: 3,
                ..good.clone()
            }),
            "version 3",
        );
        let mut dup = good.clone();
        dup.component_disks[1].offset = 0;
        check(&encode(&dup), "two components start at offset 0");
        let mut past = good.clone();
        past.component_disks[1].offset = 1024;
        check(&encode(&past), "not before the disk's length");
        let mut gap = good.clone();
        gap.component_disks[0].offset = 10;
        check(&encode(&gap), "not 0");
        check(
            &encode(&proto::CompositeDisk {
                component_disks: vec![],
                ..good.clone()
            }),
            "no components",
        );
        let mut nopath = good.clone();
        nopath.component_disks[1].file_path.clear();
        check(&encode(&nopath), "no path");
        let mut badcap = good.clone();
        badcap.component_disks[1].read_write_capability = 7;
        check(&encode(&badcap), "unknown read_write_capability 7");
        check(
            &encode(&proto::CompositeDisk {
                length: u64::MAX,
                ..good.clone()
            }),
            "too large",
        );
        let mut huge_off = good.clone();
        huge_off.component_disks[1].file_offset = u64::MAX;
        check(&encode(&huge_off), "file offset");

        // Truncated protobuf, at every cut point that is not a field boundary.
        let full = encode(&good);
        let mut truncated_errors = 0;
        for cut in CDISK_MAGIC.len() + 1..full.len() {
            if let Err(e) = parse(&full[..cut], p) {
                truncated_errors += 1;
                assert!(e.to_string().contains("bad.img"), "{e}");
            }
        }
        assert!(truncated_errors > full.len() / 2, "{truncated_errors}");
        check(&[CDISK_MAGIC, &[0x12, 0x7f, 0x0a]].concat(), "bad protobuf");
        check(&[CDISK_MAGIC, &[0x0f]].concat(), "bad protobuf");
    }

    /// Random byte mutations of a valid descriptor never panic the parser.
    #[test]
    fn mutated_descriptors_do_not_panic() {
        let good = encode(&proto::CompositeDisk {
            version: 2,
            component_disks: vec![
                comp("header", 0, false),
                comp("/abs/part", 20480, true),
                comp("footer", 24576, false),
            ],
            length: 45056,
        });
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = CDISK_MAGIC.len() + (next() as usize % (b.len() - CDISK_MAGIC.len()));
                b[i] = next() as u8;
            }
            let cut = b.len() - (next() as usize % 4);
            let _ = parse(&b[..cut], Path::new("/fuzz"));
        }
    }

    #[test]
    fn many_components_rejected_cheaply() {
        // 100k empty component messages: 2 bytes each.
        let mut b = CDISK_MAGIC.to_vec();
        for _ in 0..100_000 {
            b.extend_from_slice(&[0x12, 0]);
        }
        let e = parse(&b, Path::new("/many")).unwrap_err();
        assert!(e.to_string().contains("100000 components"), "{e}");
    }

    fn sample_parts(dir: &TempDir) -> Vec<PartitionConfig> {
        let mk = |label: &str, name: &str, data: Vec<u8>, writable| PartitionConfig {
            label: label.into(),
            path: dir.file(name, &data),
            writable,
        };
        vec![
            mk("payload-metadata", "meta", pattern(1000, 1), false),
            mk("empty", "empty", vec![], false),
            mk("vm-instance", "instance.img", pattern(8192, 2), true),
            mk("apk", "apk", pattern(5000, 3), false),
        ]
    }

    #[test]
    fn write_then_read_round_trip() {
        let dir = TempDir::new("cdisk-rt");
        let parts = sample_parts(&dir);
        let out = dir.path().join("composite.img");
        let size = write_composite(&parts, &out).unwrap();
        assert_eq!(size, 20480 + 4096 + 4096 + 8192 + 8192 + 20480);
        let files = CompositeFiles::for_descriptor(&out).unwrap();
        assert_eq!(files.header, dir.path().join("composite-header.img"));
        assert_eq!(std::fs::metadata(&files.header).unwrap().len(), 20480);
        assert_eq!(std::fs::metadata(&files.footer).unwrap().len(), 20480);
        assert_eq!(std::fs::metadata(&files.zero_filler).unwrap().len(), 4096);

        let d = parse(&std::fs::read(&out).unwrap(), &out).unwrap();
        assert_eq!(d.version, 2);
        assert_eq!(d.length, size);
        let rel: Vec<(String, u64, bool)> = d
            .components
            .iter()
            .map(|c| {
                let name = c.path.file_name().unwrap().to_str().unwrap().to_string();
                (name, c.offset, c.read_write)
            })
            .collect();
        assert_eq!(
            rel,
            [
                ("composite-header.img".to_string(), 0, false),
                ("meta".to_string(), 20480, false),
                ("composite-zero.img".to_string(), 21480, false),
                ("composite-zero.img".to_string(), 24576, false), // the empty partition
                ("instance.img".to_string(), 28672, true),
                ("apk".to_string(), 36864, false),
                ("composite-zero.img".to_string(), 41864, false),
                ("composite-footer.img".to_string(), 45056, false),
            ]
        );
        // Header paths are stored relative, partitions absolute.
        let raw = proto::CompositeDisk::decode(&std::fs::read(&out).unwrap()[15..]).unwrap();
        assert_eq!(raw.component_disks[0].file_path, "composite-header.img");
        assert!(raw.component_disks[1].file_path.starts_with('/'));

        // Open it and read through it.
        let disk = open_path(&out, RW).unwrap();
        assert_eq!(disk.len(), size);
        assert!(disk.is_writable());
        let mut b = vec![0u8; 5000];
        disk.read_exact_at(&mut b, 36864).unwrap();
        assert_eq!(b, pattern(5000, 3));
        let info = gpt::read(&disk, "t").unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.partitions.len(), 4);
        assert_eq!(info.partitions[2].1.name_string(), "vm-instance");
        disk.write_all_at(&[9u8; 512], 28672).unwrap();
        disk.flush().unwrap();
        assert_eq!(&std::fs::read(&parts[2].path).unwrap()[..512], &[9u8; 512]);
        assert!(disk.write_all_at(&[9u8; 512], 20480).is_err());
        assert_eq!(std::fs::read(&parts[0].path).unwrap(), pattern(1000, 1));

        // Read-only open: nothing writable.
        drop(disk);
        let disk = open_path(&out, RO).unwrap();
        assert!(!disk.is_writable());

        // Rewriting while a VM has it open fails (header locked) and changes nothing.
        let header_before = std::fs::read(&files.header).unwrap();
        let e = write_composite(&parts, &out).unwrap_err();
        assert!(matches!(e, DiskError::Locked { .. }), "{e}");
        assert_eq!(std::fs::read(&files.header).unwrap(), header_before);
        drop(disk);
        write_composite(&parts, &out).unwrap();
        assert_ne!(std::fs::read(&files.header).unwrap(), header_before); // new GUIDs
    }

    #[test]
    fn writer_refuses_to_overwrite_a_partition() {
        let dir = TempDir::new("cdisk-overwrite");
        let victim = dir.file("x-header.img", &pattern(4096, 5));
        let parts = [PartitionConfig {
            label: "p".into(),
            path: victim.clone(),
            writable: false,
        }];
        let e = write_composite(&parts, &dir.path().join("x.img")).unwrap_err();
        assert!(matches!(e, DiskError::OutputIsInput { .. }), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), pattern(4096, 5));
        assert!(!dir.path().join("x.img").exists());
    }

    #[test]
    fn missing_component_is_named() {
        let dir = TempDir::new("cdisk-missing");
        let parts = sample_parts(&dir);
        let out = dir.path().join("c.img");
        write_composite(&parts, &out).unwrap();
        std::fs::remove_file(&parts[3].path).unwrap();
        let e = open_path(&out, RO).err().unwrap();
        let s = e.to_string();
        assert!(matches!(e, DiskError::Component { .. }), "{s}");
        assert!(s.contains("apk") && s.contains("c.img"), "{s}");
        assert!(s.contains("No such file"), "{s}");
    }

    #[test]
    fn component_shorter_than_mapped_is_rejected() {
        let dir = TempDir::new("cdisk-short");
        let parts = sample_parts(&dir);
        let out = dir.path().join("c.img");
        write_composite(&parts, &out).unwrap();
        std::fs::write(&parts[3].path, [0u8; 100]).unwrap();
        let e = open_path(&out, RO).err().unwrap();
        assert!(
            e.to_string().contains("needs 5000 bytes, but has only 100"),
            "{e}"
        );
    }

    #[test]
    fn nested_composites() {
        let dir = TempDir::new("cdisk-nested");
        let inner_data = dir.file("data", &pattern(4096, 7));
        let inner = dir.file(
            "inner.img",
            &encode(&proto::CompositeDisk {
                version: 2,
                component_disks: vec![comp("data", 0, false)],
                length: 4096,
            }),
        );
        let _ = inner_data;
        let outer = dir.file(
            "outer.img",
            &encode(&proto::CompositeDisk {
                version: 2,
                component_disks: vec![comp("inner.img", 0, false), comp("data", 4096, false)],
                length: 8192,
            }),
        );
        let d = open_path(&outer, RO).unwrap();
        let mut b = vec![0u8; 8192];
        d.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b[..4096], &pattern(4096, 7)[..]);
        assert_eq!(&b[4096..], &pattern(4096, 7)[..]);
        let _ = inner;

        // A writable nested composite is refused.
        let rw_outer = dir.file(
            "rw-outer.img",
            &encode(&proto::CompositeDisk {
                version: 2,
                component_disks: vec![comp("inner.img", 0, true)],
                length: 4096,
            }),
        );
        let e = open_path(&rw_outer, RW).err().unwrap();
        assert!(e.to_string().contains("must be a raw file"), "{e}");
        // ... but read-only it opens.
        open_path(&rw_outer, RO).unwrap();

        // A descriptor that contains itself stops at the nesting limit.
        let selfref = dir.file(
            "self.img",
            &encode(&proto::CompositeDisk {
                version: 2,
                component_disks: vec![comp("self.img", 0, false)],
                length: 4096,
            }),
        );
        let e = open_path(&selfref, RO).err().unwrap();
        let mut inner_most = &e;
        let mut levels = 0;
        while let DiskError::Component { source, .. } = inner_most {
            inner_most = source;
            levels += 1;
        }
        assert!(
            matches!(inner_most, DiskError::NestingTooDeep { .. }),
            "{e}"
        );
        assert_eq!(levels, MAX_NESTING_DEPTH);
    }

    #[test]
    fn component_fan_out_is_bounded() {
        // l1 references l0 600 times, l0 references the leaf 600 times: 360000 components
        // without the budget. It runs out while opening the first l0, before any leaf.
        let dir = TempDir::new("cdisk-fanout");
        dir.file("leaf", &[0u8; 512]);
        let level = |name: &str, child: &str, child_len: u64| {
            let comps = (0..600)
                .map(|i| comp(child, i * child_len, false))
                .collect();
            dir.file(
                name,
                &encode(&proto::CompositeDisk {
                    version: 2,
                    component_disks: comps,
                    length: 600 * child_len,
                }),
            )
        };
        level("l0.img", "leaf", 512);
        let top = level("l1.img", "l0.img", 600 * 512);
        let e = open_path(&top, RO).err().unwrap();
        let s = e.to_string();
        assert!(
            s.contains(&format!("more than {MAX_COMPONENTS} components")),
            "{s}"
        );
    }

    #[test]
    fn unsupported_component_formats() {
        let dir = TempDir::new("cdisk-qcow");
        let mut q = b"QFI\xfb".to_vec();
        q.resize(4096, 0);
        dir.file("q", &q);
        let d = dir.file(
            "d.img",
            &encode(&proto::CompositeDisk {
                version: 2,
                component_disks: vec![comp("q", 0, false)],
                length: 4096,
            }),
        );
        let e = open_path(&d, RO).err().unwrap();
        assert!(e.to_string().contains("qcow2"), "{e}");
    }

    #[test]
    fn oversized_descriptor() {
        let dir = TempDir::new("cdisk-big");
        let mut b = CDISK_MAGIC.to_vec();
        b.resize(MAX_DESCRIPTOR_SIZE as usize + 1, 0);
        let p = dir.file("big.img", &b);
        let e = open_path(&p, RO).err().unwrap();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
