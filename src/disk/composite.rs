//! A disk made of components laid end to end: host files, runs of zeros, bytes held in memory,
//! or nested composites. Requests are split at component boundaries, so one read or write may
//! span several partitions.
//!
//! [`CompositeDisk::from_partitions`] builds AVF's GPT composite from host files: the GPT
//! header and footer live in memory, partitions are the host files themselves, and alignment
//! padding is a virtual run of zeros (no temporary files).
//!
//! Partition placement ([`plan`], shared with the descriptor writer in `cdisk`): the first
//! partition starts at 20480 (LBA 40); each takes its size rounded up to 4 KiB; a read-only
//! partition whose size is not a 4 KiB multiple is padded with zeros; a writable one must be
//! a 4 KiB multiple already. An empty file still gets a GPT entry: crosvm would write
//! `last_lba = first_lba - 1` for it, which sgdisk reports as a problem, so here it occupies
//! one 4 KiB block of zeros instead (read-only, even when the partition is marked writable:
//! there is no file space behind it).

use std::collections::HashMap;
use std::path::PathBuf;

use uuid::Uuid;

use super::gpt::{self, GptEntry, GptImage, LINUX_FILESYSTEM_GUID, PARTITION_ALIGNMENT};
use super::raw::RawFile;
use super::{DiskBackend, DiskError, OpenMode, SECTOR_SIZE, check_range, id_from_name};
use crate::api::PartitionConfig;

/// What a component's bytes come from.
pub enum Source {
    /// A host file, starting at `file_offset` inside it.
    File { file: RawFile, file_offset: u64 },
    /// Reads as zeros; read-only.
    Zeros,
    /// Bytes held in memory (the GPT header and footer); read-only.
    Memory(Vec<u8>),
    /// A composite inside a composite (descriptors only).
    Nested(Box<CompositeDisk>),
}

/// One contiguous piece of a composite disk.
pub struct Component {
    offset: u64,
    len: u64,
    source: Source,
    /// What the configuration or descriptor says (READ_WRITE), whatever the disk was opened as.
    read_write: bool,
    /// For messages: "partition \"x\" (/path)", "GPT header", a descriptor's file path.
    desc: String,
}

impl Component {
    /// A read-only component described by its source.
    pub fn new(offset: u64, len: u64, source: Source) -> Component {
        let desc = match &source {
            Source::File { file, .. } => format!("{:?}", file.path()),
            Source::Zeros => "zero padding".into(),
            Source::Memory(_) => "bytes in memory".into(),
            Source::Nested(d) => d.name.clone(),
        };
        Component {
            offset,
            len,
            source,
            read_write: false,
            desc,
        }
    }

    pub fn described(mut self, desc: impl Into<String>) -> Component {
        self.desc = desc.into();
        self
    }

    /// Marks the component as READ_WRITE in its configuration.
    pub fn read_write(mut self, rw: bool) -> Component {
        self.read_write = rw;
        self
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// Marked READ_WRITE by its configuration (it may still be open read-only).
    pub fn is_read_write(&self) -> bool {
        self.read_write
    }

    /// Open for writing now.
    pub fn is_writable(&self) -> bool {
        match &self.source {
            Source::File { file, .. } => file.is_writable(),
            Source::Nested(d) => d.is_writable(),
            Source::Zeros | Source::Memory(_) => false,
        }
    }

    /// How many bytes the source can provide from the component's start.
    fn source_len(&self) -> u64 {
        match &self.source {
            Source::File { file, file_offset } => file.size().saturating_sub(*file_offset),
            Source::Zeros => u64::MAX,
            Source::Memory(b) => b.len() as u64,
            Source::Nested(d) => d.len(),
        }
    }

    /// `rel` and `rel + buf.len()` are within the component (checked by the caller).
    fn read(&self, buf: &mut [u8], rel: u64) -> Result<(), DiskError> {
        match &self.source {
            Source::File { file, file_offset } => file.read_at(buf, file_offset + rel),
            Source::Zeros => {
                buf.fill(0);
                Ok(())
            }
            Source::Memory(b) => {
                let start = rel as usize;
                buf.copy_from_slice(&b[start..start + buf.len()]);
                Ok(())
            }
            Source::Nested(d) => d.read_exact_at(buf, rel),
        }
    }

    fn write(&self, buf: &[u8], rel: u64) -> Result<(), DiskError> {
        match &self.source {
            Source::File { file, file_offset } => file.write_at(buf, file_offset + rel),
            Source::Nested(d) => d.write_all_at(buf, rel),
            Source::Zeros | Source::Memory(_) => Err(self.read_only(self.offset + rel)),
        }
    }

    fn read_only(&self, offset: u64) -> DiskError {
        DiskError::ReadOnly {
            offset,
            what: format!("{} (disk bytes {}..{})", self.desc, self.offset, self.end()),
        }
    }
}

/// Where a composite came from (for `inspect`, and to hold the descriptor's lock).
pub enum Origin {
    /// Built from partition files.
    Partitions { disk_guid: Uuid },
    /// A crosvm descriptor file (kept open: its read lock lasts as long as the disk).
    Descriptor { file: RawFile, version: u64 },
}

/// A disk made of components.
pub struct CompositeDisk {
    components: Vec<Component>,
    len: u64,
    name: String,
    id: [u8; 20],
    origin: Option<Origin>,
}

impl CompositeDisk {
    /// Checks that the components are sorted, start at 0, leave no gaps, are not empty, and
    /// that each source has the bytes mapped to it. `name` identifies the disk in errors.
    pub fn new(components: Vec<Component>, name: String) -> Result<CompositeDisk, DiskError> {
        let bad = |reason: String| DiskError::Layout {
            disk: name.clone(),
            reason,
        };
        let mut expect = 0u64;
        for c in &components {
            if c.offset != expect {
                return Err(bad(format!(
                    "component {} starts at offset {} instead of {expect}",
                    c.desc, c.offset
                )));
            }
            if c.len == 0 {
                return Err(bad(format!(
                    "component {} at offset {} is empty",
                    c.desc, c.offset
                )));
            }
            if c.source_len() < c.len {
                return Err(bad(format!(
                    "component {} at offset {} needs {} bytes, but has only {}",
                    c.desc,
                    c.offset,
                    c.len,
                    c.source_len()
                )));
            }
            expect = c
                .offset
                .checked_add(c.len)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| bad(format!("component {} ends past 2^63", c.desc)))?;
        }
        if components.is_empty() {
            return Err(bad("no components".into()));
        }
        Ok(CompositeDisk {
            components,
            len: expect,
            id: id_from_name(&name),
            name,
            origin: None,
        })
    }

    pub(crate) fn with_origin(mut self, origin: Origin) -> CompositeDisk {
        self.origin = Some(origin);
        self
    }

    pub(crate) fn with_id(mut self, id: [u8; 20]) -> CompositeDisk {
        self.id = id;
        self
    }

    /// Builds AVF's composite GPT disk over `partitions` (see the module docs for the layout).
    /// A partition file is opened read-write when `mode.writable` and the partition is
    /// writable, read-only otherwise.
    pub fn from_partitions(
        partitions: &[PartitionConfig],
        mode: OpenMode,
    ) -> Result<CompositeDisk, DiskError> {
        if partitions.len() > gpt::GPT_NUM_PARTITIONS {
            return Err(DiskError::TooManyPartitions {
                count: partitions.len(),
                max: gpt::GPT_NUM_PARTITIONS,
            });
        }
        let mut files = Vec::with_capacity(partitions.len());
        for p in partitions {
            files.push(RawFile::open(&p.path, mode.writable && p.writable, false)?);
        }
        // One host file cannot back two partitions when either is opened writable (the
        // guest would see one partition change under the other).
        let mut seen: HashMap<(u64, u64), (usize, bool)> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            if let Some(&(j, w)) = seen.get(&f.dev_ino())
                && (w || f.is_writable())
            {
                return Err(DiskError::SharedWritableFile {
                    path: f.path().to_path_buf(),
                    first: partitions[j].label.clone(),
                    second: partitions[i].label.clone(),
                });
            }
            seen.insert(f.dev_ino(), (i, f.is_writable()));
        }
        if mode.lock {
            for f in &files {
                f.lock()?;
            }
        }
        let sizes: Vec<u64> = files.iter().map(RawFile::size).collect();
        let layout = plan(partitions, &sizes, Uuid::new_v4())?;

        let mut components = Vec::with_capacity(2 * partitions.len() + 2);
        components.push(
            Component::new(
                0,
                gpt::GPT_BEGINNING_SIZE,
                Source::Memory(layout.gpt.header),
            )
            .described("GPT header"),
        );
        for (part, file) in layout.partitions.iter().zip(files) {
            let what = format!("partition {:?} ({:?})", part.label, part.path);
            if part.size > 0 {
                components.push(
                    Component::new(
                        part.offset,
                        part.size,
                        Source::File {
                            file,
                            file_offset: 0,
                        },
                    )
                    .read_write(part.writable)
                    .described(what.clone()),
                );
            }
            if part.span > part.size {
                components.push(
                    Component::new(
                        part.offset + part.size,
                        part.span - part.size,
                        Source::Zeros,
                    )
                    .described(format!("zero padding of {what}")),
                );
            }
        }
        components.push(
            Component::new(
                layout.footer_offset,
                gpt::GPT_FOOTER_SIZE,
                Source::Memory(layout.gpt.footer),
            )
            .described("GPT footer"),
        );
        let name = format!("composite disk {}", layout.disk_guid);
        let guid_hex = layout.disk_guid.simple().to_string();
        Ok(CompositeDisk::new(components, name)?
            .with_id(id_from_name(&guid_hex))
            .with_origin(Origin::Partitions {
                disk_guid: layout.disk_guid,
            }))
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Every host file the disk reads from (components, nested composites, descriptors).
    pub fn host_files(&self) -> Vec<&RawFile> {
        let mut out = Vec::new();
        if let Some(Origin::Descriptor { file, .. }) = &self.origin {
            out.push(file);
        }
        for c in &self.components {
            match &c.source {
                Source::File { file, .. } => out.push(file),
                Source::Nested(d) => out.extend(d.host_files()),
                Source::Zeros | Source::Memory(_) => {}
            }
        }
        out
    }

    /// Index of the component holding byte `offset` (`offset < len`).
    fn find(&self, offset: u64) -> usize {
        // The first component starts at 0, so at least one has `offset <= offset`.
        self.components
            .partition_point(|c| c.offset <= offset)
            .saturating_sub(1)
    }

    /// Calls `f(component, range of buf, offset inside the component)` for each component
    /// the request `[offset, offset + len)` touches, in order.
    fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Component, std::ops::Range<usize>, u64) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        check_range(offset, len, self.len)?;
        let mut done = 0usize;
        let mut i = self.find(offset);
        while done < len {
            let c = &self.components[i];
            let pos = offset + done as u64;
            let rel = pos - c.offset;
            let n = ((len - done) as u64).min(c.len - rel) as usize;
            f(c, done..done + n, rel)?;
            done += n;
            i += 1;
        }
        Ok(())
    }
}

impl DiskBackend for CompositeDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn is_writable(&self) -> bool {
        self.components.iter().any(Component::is_writable)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.for_each_piece(offset, buf.len(), |c, range, rel| {
            c.read(&mut buf[range], rel)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        // Check every piece first, so a write that is partly read-only changes nothing.
        self.for_each_piece(offset, buf.len(), |c, _, rel| {
            if c.is_writable() {
                Ok(())
            } else {
                Err(c.read_only(c.offset + rel))
            }
        })?;
        self.for_each_piece(offset, buf.len(), |c, range, rel| c.write(&buf[range], rel))
    }

    fn flush(&self) -> Result<(), DiskError> {
        let mut first_err = None;
        for c in &self.components {
            let r = match &c.source {
                Source::File { file, .. } => file.sync_if_dirty(),
                Source::Nested(d) => d.flush(),
                Source::Zeros | Source::Memory(_) => Ok(()),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn id(&self) -> [u8; 20] {
        self.id
    }
}

/// Where one partition goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    pub label: String,
    pub path: PathBuf,
    /// As configured (the disk may still be opened read-only).
    pub writable: bool,
    /// Bytes of the host file.
    pub size: u64,
    /// Disk offset of the partition's first byte.
    pub offset: u64,
    /// Bytes the partition occupies: the size rounded up to 4 KiB, and 4 KiB for an empty file.
    pub span: u64,
    pub entry: GptEntry,
}

/// A composite GPT disk's layout.
#[derive(Debug, Clone)]
pub struct Layout {
    pub partitions: Vec<PlacedPartition>,
    /// Where the footer starts (the end of the last partition).
    pub footer_offset: u64,
    pub disk_guid: Uuid,
    pub gpt: GptImage,
}

impl Layout {
    pub fn disk_size(&self) -> u64 {
        self.gpt.disk_size
    }
}

/// Places `partitions` (with host file sizes `sizes`) on a GPT disk and builds its header and
/// footer. Each partition gets a random unique GUID.
pub fn plan(
    partitions: &[PartitionConfig],
    sizes: &[u64],
    disk_guid: Uuid,
) -> Result<Layout, DiskError> {
    if partitions.len() > gpt::GPT_NUM_PARTITIONS {
        return Err(DiskError::TooManyPartitions {
            count: partitions.len(),
            max: gpt::GPT_NUM_PARTITIONS,
        });
    }
    let mut names = HashMap::new();
    let mut placed = Vec::with_capacity(partitions.len());
    let mut offset = gpt::GPT_BEGINNING_SIZE;
    for (p, &size) in partitions.iter().zip(sizes) {
        let name = gpt::encode_name(&p.label)?;
        if names.insert(name, ()).is_some() {
            return Err(DiskError::DuplicateLabel(p.label.clone()));
        }
        if p.writable && !size.is_multiple_of(PARTITION_ALIGNMENT) {
            return Err(DiskError::UnalignedWritablePartition {
                label: p.label.clone(),
                path: p.path.clone(),
                size,
            });
        }
        let too_large = || DiskError::DiskTooLarge {
            size: offset.saturating_add(size),
            max: gpt::MAX_DISK_SIZE,
        };
        let span = size
            .max(1)
            .checked_next_multiple_of(PARTITION_ALIGNMENT)
            .ok_or_else(too_large)?;
        let end = offset
            .checked_add(span)
            .filter(|&e| e <= gpt::MAX_DISK_SIZE)
            .ok_or_else(too_large)?;
        placed.push(PlacedPartition {
            label: p.label.clone(),
            path: p.path.clone(),
            writable: p.writable,
            size,
            offset,
            span,
            entry: GptEntry {
                type_guid: LINUX_FILESYSTEM_GUID,
                unique_guid: Uuid::new_v4(),
                first_lba: offset / SECTOR_SIZE,
                last_lba: end / SECTOR_SIZE - 1,
                attributes: 0,
                name,
            },
        });
        offset = end;
    }
    let entries: Vec<GptEntry> = placed.iter().map(|p| p.entry.clone()).collect();
    let gpt = gpt::build(disk_guid, &entries, offset)?;
    Ok(Layout {
        partitions: placed,
        footer_offset: offset,
        disk_guid,
        gpt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::{TempDir, pattern};

    fn part(label: &str, path: PathBuf, writable: bool) -> PartitionConfig {
        PartitionConfig {
            label: label.into(),
            path,
            writable,
        }
    }

    const RW: OpenMode = OpenMode {
        writable: true,
        lock: true,
        allow_block_devices: false,
    };
    const RO: OpenMode = OpenMode {
        writable: false,
        lock: true,
        allow_block_devices: false,
    };

    fn file(dir: &TempDir, name: &str, len: usize, seed: u8) -> PathBuf {
        dir.file(name, &pattern(len, seed))
    }

    #[test]
    fn plan_offsets_and_lbas() {
        let parts = [
            part("a", "/a".into(), false),
            part("b", "/b".into(), true),
            part("empty", "/e".into(), false),
            part("c", "/c".into(), false),
        ];
        let l = plan(&parts, &[1000, 8192, 0, 4096], Uuid::nil()).unwrap();
        let p = &l.partitions;
        assert_eq!((p[0].offset, p[0].span), (20480, 4096));
        assert_eq!((p[0].entry.first_lba, p[0].entry.last_lba), (40, 47));
        assert_eq!((p[1].offset, p[1].span), (24576, 8192));
        assert_eq!((p[1].entry.first_lba, p[1].entry.last_lba), (48, 63));
        // The empty file occupies one 4 KiB block.
        assert_eq!((p[2].offset, p[2].span), (32768, 4096));
        assert_eq!((p[2].entry.first_lba, p[2].entry.last_lba), (64, 71));
        assert_eq!((p[3].entry.first_lba, p[3].entry.last_lba), (72, 79));
        assert_eq!(l.footer_offset, 40960);
        assert_eq!(l.disk_size(), 40960 + 3584 + 16896);
        // Unique GUIDs differ.
        assert_ne!(p[0].entry.unique_guid, p[1].entry.unique_guid);
    }

    #[test]
    fn plan_rejections() {
        let e = plan(
            &[part("a", "/a".into(), false), part("a", "/b".into(), false)],
            &[4096, 4096],
            Uuid::nil(),
        )
        .unwrap_err();
        assert!(
            matches!(e, DiskError::DuplicateLabel(ref l) if l == "a"),
            "{e}"
        );
        let e = plan(&[part("w", "/w".into(), true)], &[4097], Uuid::nil()).unwrap_err();
        assert!(
            matches!(e, DiskError::UnalignedWritablePartition { size: 4097, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("\"w\""));
        let e = plan(
            &[part(&"l".repeat(37), "/l".into(), false)],
            &[1],
            Uuid::nil(),
        )
        .unwrap_err();
        assert!(matches!(e, DiskError::BadLabel { .. }), "{e}");
        // Too large for the MBR, and sizes that would overflow.
        for size in [gpt::MAX_DISK_SIZE, u64::MAX] {
            let e = plan(&[part("big", "/b".into(), false)], &[size], Uuid::nil()).unwrap_err();
            assert!(matches!(e, DiskError::DiskTooLarge { .. }), "{e}");
        }
        let many: Vec<_> = (0..129)
            .map(|i| part(&i.to_string(), "/x".into(), false))
            .collect();
        assert!(matches!(
            plan(&many, &[4096; 129], Uuid::nil()),
            Err(DiskError::TooManyPartitions { count: 129, .. })
        ));
        // Zero-size writable partitions are allowed (0 is a 4 KiB multiple).
        assert!(plan(&[part("w", "/w".into(), true)], &[0], Uuid::nil()).is_ok());
    }

    /// Three partitions: 1000 bytes (padded), 8192 writable, 4096.
    fn three(dir: &TempDir, mode: OpenMode) -> (CompositeDisk, Vec<PathBuf>) {
        let paths = vec![
            file(dir, "a.img", 1000, 1),
            file(dir, "b.img", 8192, 2),
            file(dir, "c.img", 4096, 3),
        ];
        let parts = [
            part("a", paths[0].clone(), false),
            part("b", paths[1].clone(), true),
            part("c", paths[2].clone(), false),
        ];
        (CompositeDisk::from_partitions(&parts, mode).unwrap(), paths)
    }

    #[test]
    fn layout_of_built_disk() {
        let dir = TempDir::new("comp-layout");
        let (d, _) = three(&dir, RW);
        assert_eq!(d.len(), 20480 + 4096 + 8192 + 4096 + 20480);
        assert!(d.is_writable());
        let offs: Vec<(u64, u64)> = d.components().iter().map(|c| (c.offset, c.len)).collect();
        assert_eq!(
            offs,
            vec![
                (0, 20480),
                (20480, 1000),
                (21480, 3096),
                (24576, 8192),
                (32768, 4096),
                (36864, 20480)
            ]
        );
        let mut header = vec![0u8; 20480];
        d.read_exact_at(&mut header, 0).unwrap();
        assert_eq!(&header[510..512], &[0x55, 0xaa]);
        assert_eq!(&header[512..520], b"EFI PART");
        let info = gpt::read(&d, "test").unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let labels: Vec<String> = info
            .partitions
            .iter()
            .map(|(_, e)| e.name_string())
            .collect();
        assert_eq!(labels, ["a", "b", "c"]);
        assert_eq!(
            &d.id()[..20],
            &info.primary.disk_guid.simple().to_string().as_bytes()[..20]
        );
    }

    #[test]
    fn reads_split_across_partitions() {
        let dir = TempDir::new("comp-split");
        let (d, _) = three(&dir, RO);
        // From the last 100 bytes of "a", through its padding, into "b".
        let mut buf = vec![0xffu8; 100 + 3096 + 512];
        d.read_exact_at(&mut buf, 20480 + 900).unwrap();
        assert_eq!(&buf[..100], &pattern(1000, 1)[900..]);
        assert!(buf[100..100 + 3096].iter().all(|&b| b == 0));
        assert_eq!(&buf[3196..], &pattern(8192, 2)[..512]);
        // From the end of "c" into the footer.
        let mut buf = vec![0u8; 1024];
        d.read_exact_at(&mut buf, 36864 - 512).unwrap();
        assert_eq!(&buf[..512], &pattern(4096, 3)[3584..]);
        assert!(buf[512..].iter().all(|&b| b == 0)); // footer padding
        // The whole disk in one read.
        let mut all = vec![0u8; d.len() as usize];
        d.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(&all[24576..32768], &pattern(8192, 2)[..]);
        // Past the end.
        assert!(matches!(
            d.read_exact_at(&mut [0u8; 512], d.len() - 511),
            Err(DiskError::OutOfRange { .. })
        ));
        d.read_exact_at(&mut [], d.len()).unwrap();
    }

    #[test]
    fn writes_land_in_host_files() {
        let dir = TempDir::new("comp-write");
        let (d, paths) = three(&dir, RW);
        d.write_all_at(&[0x5a; 1024], 24576 + 4096).unwrap();
        d.flush().unwrap();
        let b = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&b[4096..5120], &[0x5a; 1024]);
        assert_eq!(&b[..4096], &pattern(8192, 2)[..4096]);
        assert_eq!(b.len(), 8192);
    }

    #[test]
    fn read_only_parts_reject_writes() {
        let dir = TempDir::new("comp-ro");
        let (d, paths) = three(&dir, RW);
        let before: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        // Read-only partition, its padding, the header, the footer.
        for off in [20480, 21480 + 8, 0, 36864 + 512] {
            let e = d.write_all_at(&[1u8; 512], off).unwrap_err();
            assert!(matches!(e, DiskError::ReadOnly { .. }), "{off}: {e}");
        }
        // A write that starts in the writable partition and runs into "c" changes nothing.
        let e = d.write_all_at(&[1u8; 1024], 32768 - 512).unwrap_err();
        assert!(e.to_string().contains("partition \"c\""), "{e}");
        let after: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(before, after);
        let mut h = vec![0u8; 512];
        d.read_exact_at(&mut h, 0).unwrap();
        assert_eq!(&h[510..], &[0x55, 0xaa]);

        // Opened read-only, even the writable partition is read-only.
        drop(d);
        let (d, _) = three(&dir, RO);
        assert!(!d.is_writable());
        assert!(d.write_all_at(&[1u8; 512], 24576).is_err());
        assert_eq!(std::fs::read(&paths[1]).unwrap(), before[1]);
        d.flush().unwrap();
    }

    #[test]
    fn concurrent_io_from_threads() {
        let dir = TempDir::new("comp-threads");
        let paths: Vec<PathBuf> = (0..4)
            .map(|i| dir.file(&format!("p{i}"), &[0u8; 16384]))
            .collect();
        let parts: Vec<PartitionConfig> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| part(&format!("p{i}"), p.clone(), true))
            .collect();
        let d = CompositeDisk::from_partitions(&parts, RW).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let d = &d;
                s.spawn(move || {
                    // Each thread owns one 512-byte slot in every partition, and writes
                    // across the partition boundaries too.
                    for round in 0..50u8 {
                        for p in 0..4u64 {
                            let off = 20480 + p * 16384 + t as u64 * 512;
                            let data = [t ^ round; 512];
                            d.write_all_at(&data, off).unwrap();
                            let mut back = [0u8; 512];
                            d.read_exact_at(&mut back, off).unwrap();
                            assert_eq!(back, data);
                        }
                    }
                    d.flush().unwrap();
                });
            }
        });
        for p in &paths {
            let b = std::fs::read(p).unwrap();
            for t in 0..4usize {
                assert!(b[t * 512..(t + 1) * 512].iter().all(|&x| x == t as u8 ^ 49));
            }
        }
    }

    #[test]
    fn flush_syncs_only_dirty_files() {
        let dir = TempDir::new("comp-flush");
        let paths = [file(&dir, "a.img", 4096, 1), file(&dir, "b.img", 4096, 2)];
        let d = CompositeDisk::from_partitions(
            &[
                part("a", paths[0].clone(), true),
                part("b", paths[1].clone(), true),
            ],
            RW,
        )
        .unwrap();
        let syncs = |d: &CompositeDisk| -> Vec<u64> {
            d.host_files().iter().map(|f| f.sync_count()).collect()
        };
        d.flush().unwrap();
        assert_eq!(syncs(&d), [0, 0]);
        d.write_all_at(&[7u8; 512], 20480 + 4096).unwrap();
        d.flush().unwrap();
        assert_eq!(syncs(&d), [0, 1]);
        d.flush().unwrap();
        assert_eq!(syncs(&d), [0, 1]);
        // A write spanning both marks both.
        d.write_all_at(&[7u8; 1024], 20480 + 4096 - 512).unwrap();
        d.flush().unwrap();
        assert_eq!(syncs(&d), [1, 2]);
    }

    #[test]
    fn empty_files_and_padding() {
        let dir = TempDir::new("comp-empty");
        let e = dir.file("e.img", b"");
        let w = dir.file("w.img", b"");
        let d =
            CompositeDisk::from_partitions(&[part("e", e, false), part("w", w.clone(), true)], RW)
                .unwrap();
        assert_eq!(d.len(), 20480 + 8192 + 20480);
        let mut b = vec![0xffu8; 8192];
        d.read_exact_at(&mut b, 20480).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        // The writable empty partition has no file space: it is read-only zeros.
        assert!(d.write_all_at(&[1u8; 512], 24576).is_err());
        assert_eq!(std::fs::metadata(&w).unwrap().len(), 0);
        let info = gpt::read(&d, "t").unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.partitions[1].1.first_lba, 48);
        assert_eq!(info.partitions[1].1.last_lba, 55);
    }

    #[test]
    fn partition_errors() {
        let dir = TempDir::new("comp-errors");
        let a = file(&dir, "a.img", 4096, 1);
        let odd = file(&dir, "odd.img", 100, 1);
        let e = CompositeDisk::from_partitions(&[part("w", odd.clone(), true)], RO)
            .err()
            .unwrap();
        assert!(
            matches!(e, DiskError::UnalignedWritablePartition { .. }),
            "{e}"
        );
        let e = CompositeDisk::from_partitions(
            &[part("x", a.clone(), false), part("x", odd, false)],
            RO,
        )
        .err()
        .unwrap();
        assert!(matches!(e, DiskError::DuplicateLabel(_)), "{e}");
        let e =
            CompositeDisk::from_partitions(&[part("x", dir.path().join("nope.img"), false)], RO)
                .err()
                .unwrap();
        assert!(e.to_string().contains("nope.img"), "{e}");
        // The same file twice: fine read-only, refused when one is writable.
        CompositeDisk::from_partitions(
            &[part("x", a.clone(), false), part("y", a.clone(), false)],
            RW,
        )
        .unwrap();
        let e = CompositeDisk::from_partitions(
            &[part("x", a.clone(), false), part("y", a.clone(), true)],
            RW,
        )
        .err()
        .unwrap();
        assert!(matches!(e, DiskError::SharedWritableFile { .. }), "{e}");
        // Another holder of a write lock.
        let _held = RawFile::open(&a, true, true).unwrap();
        let e = CompositeDisk::from_partitions(&[part("x", a, false)], RO)
            .err()
            .unwrap();
        assert!(matches!(e, DiskError::Locked { .. }), "{e}");
    }

    #[test]
    fn new_checks_layout() {
        let mem = |n: usize| Source::Memory(vec![0; n]);
        assert!(CompositeDisk::new(vec![], "t".into()).is_err());
        assert!(CompositeDisk::new(vec![Component::new(1, 10, mem(10))], "t".into()).is_err());
        assert!(CompositeDisk::new(vec![Component::new(0, 10, mem(9))], "t".into()).is_err());
        assert!(CompositeDisk::new(vec![Component::new(0, 0, mem(0))], "t".into()).is_err());
        assert!(
            CompositeDisk::new(
                vec![
                    Component::new(0, 10, mem(10)),
                    Component::new(11, 10, mem(10))
                ],
                "t".into()
            )
            .is_err()
        );
        assert!(
            CompositeDisk::new(vec![Component::new(0, u64::MAX, Source::Zeros)], "t".into())
                .is_err()
        );
        let d = CompositeDisk::new(
            vec![
                Component::new(0, 10, mem(10)),
                Component::new(10, 1 << 40, Source::Zeros),
            ],
            "t".into(),
        )
        .unwrap();
        assert_eq!(d.len(), 10 + (1 << 40));
        assert!(!d.is_writable());
        let mut b = [1u8; 20];
        d.read_exact_at(&mut b, (1 << 40) - 10).unwrap();
        assert_eq!(b, [0; 20]);
    }
}
