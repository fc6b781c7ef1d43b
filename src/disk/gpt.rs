//! GUID Partition Tables as crosvm's `create_composite_disk` writes them (current upstream
//! footer variant), and a parser for `inspect` and the tests.
//!
//! Layout of a composite disk of `disk_size` bytes whose last partition ends at `footer`:
//!
//! | bytes | what |
//! |---|---|
//! | 0..512 | protective MBR: one 0xEE entry from LBA 1 covering `disk_size / 512` sectors |
//! | 512..1024 | primary GPT header (92 bytes + 420 zero bytes) |
//! | 1024..17408 | 128 partition entries of 128 bytes |
//! | 17408..20480 | zeros, so the first partition starts at LBA 40 (4 KiB aligned) |
//! | 20480..footer | partitions, each 4 KiB aligned |
//! | footer..+3584 | zeros (keeps the backup structures at the very end) |
//! | ..+16384 | backup copy of the partition entries |
//! | last 512 | backup GPT header (the last LBA), 420 zero bytes after it |
//!
//! So `disk_size = footer + 3584 + 16896`. The A13-A15 crosvm variant instead rounded the disk
//! up to 64 KiB and left the backup header short of the last LBA; it is not written here.
//!
//! Both headers say the partition entries are at LBA 2; crosvm does the same (a quirk: the
//! backup copy of the entries is never pointed at). Readers such as Linux and sgdisk accept it
//! because both copies are identical.

use uuid::Uuid;

use super::{DiskBackend, DiskError, SECTOR_SIZE};

/// Size of the GPT header structure.
pub const GPT_HEADER_SIZE: usize = 92;
/// Partition entries in the table (so at most this many partitions).
pub const GPT_NUM_PARTITIONS: usize = 128;
/// Size of one partition entry.
pub const GPT_ENTRY_SIZE: usize = 128;
/// Size of the whole entry array.
pub const GPT_ENTRIES_SIZE: usize = GPT_NUM_PARTITIONS * GPT_ENTRY_SIZE;
/// Everything before the first partition: MBR, primary header, entries, alignment padding.
pub const GPT_BEGINNING_SIZE: u64 = 40 * SECTOR_SIZE;
/// The backup entries and backup header (33 sectors).
pub const GPT_END_SIZE: u64 = 33 * SECTOR_SIZE;
/// Partitions start and end on this boundary.
pub const PARTITION_ALIGNMENT: u64 = 1 << 12;
/// Zeros at the start of the footer, so the footer is 4 KiB aligned and ends the disk.
pub const FOOTER_PADDING: u64 = GPT_END_SIZE.next_multiple_of(PARTITION_ALIGNMENT) - GPT_END_SIZE;
/// The footer: padding + backup entries + backup header.
pub const GPT_FOOTER_SIZE: u64 = FOOTER_PADDING + GPT_END_SIZE;
/// UTF-16 code units in a partition name.
pub const NAME_UNITS: usize = 36;
/// The largest disk the protective MBR can describe (a u32 sector count).
pub const MAX_DISK_SIZE: u64 = u32::MAX as u64 * SECTOR_SIZE;
/// "Linux filesystem data", the type of every AVF partition.
pub const LINUX_FILESYSTEM_GUID: Uuid = Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4);
/// "EFI System partition".
pub const EFI_SYSTEM_GUID: Uuid = Uuid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: [u8; 4] = [0, 0, 1, 0];

/// A GPT GUID in its on-disk byte order: the first three fields little-endian, the last eight
/// bytes as they are ("mixed-endian").
pub fn guid_to_bytes(g: Uuid) -> [u8; 16] {
    g.to_bytes_le()
}

pub fn guid_from_bytes(b: [u8; 16]) -> Uuid {
    Uuid::from_bytes_le(b)
}

/// The name of a well-known partition type.
pub fn type_name(g: Uuid) -> Option<&'static str> {
    match g {
        LINUX_FILESYSTEM_GUID => Some("Linux filesystem"),
        EFI_SYSTEM_GUID => Some("EFI System"),
        _ => None,
    }
}

/// Encodes a label as a GPT partition name: UTF-16, at most 36 code units, zero-padded.
/// Longer labels are rejected (crosvm silently truncates them), as are NUL characters.
pub fn encode_name(label: &str) -> Result<[u16; NAME_UNITS], DiskError> {
    let bad = |reason: String| DiskError::BadLabel {
        label: label.to_string(),
        reason,
    };
    if label.contains('\0') {
        return Err(bad("contains a NUL character".into()));
    }
    let units: Vec<u16> = label.encode_utf16().collect();
    if units.len() > NAME_UNITS {
        return Err(bad(format!(
            "is {} UTF-16 code units long; a GPT name holds at most {NAME_UNITS}",
            units.len()
        )));
    }
    let mut name = [0u16; NAME_UNITS];
    name[..units.len()].copy_from_slice(&units);
    Ok(name)
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    pub type_guid: Uuid,
    pub unique_guid: Uuid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: [u16; NAME_UNITS],
}

impl GptEntry {
    pub fn to_bytes(&self) -> [u8; GPT_ENTRY_SIZE] {
        let mut b = [0u8; GPT_ENTRY_SIZE];
        b[0..16].copy_from_slice(&guid_to_bytes(self.type_guid));
        b[16..32].copy_from_slice(&guid_to_bytes(self.unique_guid));
        b[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        b[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        b[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, u) in self.name.iter().enumerate() {
            b[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        b
    }

    /// Parses the first 128 bytes of an entry (entries may be larger; the rest is ignored).
    pub fn from_bytes(b: &[u8; GPT_ENTRY_SIZE]) -> GptEntry {
        let mut name = [0u16; NAME_UNITS];
        for (i, u) in name.iter_mut().enumerate() {
            *u = u16::from_le_bytes([b[56 + 2 * i], b[57 + 2 * i]]);
        }
        GptEntry {
            type_guid: guid_from_bytes(arr(&b[0..16])),
            unique_guid: guid_from_bytes(arr(&b[16..32])),
            first_lba: u64::from_le_bytes(arr(&b[32..40])),
            last_lba: u64::from_le_bytes(arr(&b[40..48])),
            attributes: u64::from_le_bytes(arr(&b[48..56])),
            name,
        }
    }

    /// An entry is in use when its type GUID is not all zeros.
    pub fn is_used(&self) -> bool {
        !self.type_guid.is_nil()
    }

    /// The name up to its first NUL (unpaired surrogates replaced).
    pub fn name_string(&self) -> String {
        let end = self.name.iter().position(|&u| u == 0).unwrap_or(NAME_UNITS);
        String::from_utf16_lossy(&self.name[..end])
    }

    /// Size in bytes (0 if the entry ends before it starts).
    pub fn size(&self) -> u64 {
        self.last_lba
            .saturating_add(1)
            .saturating_sub(self.first_lba)
            .saturating_mul(SECTOR_SIZE)
    }
}

/// A GPT header (the fields that vary; signature, revision and size are fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Uuid,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc32: u32,
}

impl GptHeader {
    /// The 92 header bytes, with the header CRC32 filled in.
    pub fn to_bytes(&self) -> [u8; GPT_HEADER_SIZE] {
        let mut b = [0u8; GPT_HEADER_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&REVISION_1_0);
        b[12..16].copy_from_slice(&(GPT_HEADER_SIZE as u32).to_le_bytes());
        // 16..20: header CRC32, computed below with the field zero; 20..24 reserved.
        b[24..32].copy_from_slice(&self.current_lba.to_le_bytes());
        b[32..40].copy_from_slice(&self.backup_lba.to_le_bytes());
        b[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        b[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        b[56..72].copy_from_slice(&guid_to_bytes(self.disk_guid));
        b[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        b[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        b[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        b[88..92].copy_from_slice(&self.entries_crc32.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header sector: signature, header size, header CRC32.
    pub fn parse(sector: &[u8]) -> Result<GptHeader, String> {
        if sector.len() < GPT_HEADER_SIZE || &sector[0..8] != SIGNATURE {
            return Err("no \"EFI PART\" signature".into());
        }
        let size = u32::from_le_bytes(arr(&sector[12..16])) as usize;
        if size < GPT_HEADER_SIZE || size > sector.len() {
            return Err(format!("header size {size} is invalid"));
        }
        let stored = u32::from_le_bytes(arr(&sector[16..20]));
        let mut copy = sector[..size].to_vec();
        copy[16..20].fill(0);
        let crc = crc32fast::hash(&copy);
        if crc != stored {
            return Err(format!(
                "header CRC32 is {stored:#010x}, the header hashes to {crc:#010x}"
            ));
        }
        let u64_at = |o: usize| u64::from_le_bytes(arr(&sector[o..o + 8]));
        let u32_at = |o: usize| u32::from_le_bytes(arr(&sector[o..o + 4]));
        Ok(GptHeader {
            current_lba: u64_at(24),
            backup_lba: u64_at(32),
            first_usable_lba: u64_at(40),
            last_usable_lba: u64_at(48),
            disk_guid: guid_from_bytes(arr(&sector[56..72])),
            entries_lba: u64_at(72),
            num_entries: u32_at(80),
            entry_size: u32_at(84),
            entries_crc32: u32_at(88),
        })
    }
}

/// The protective MBR for a disk of `disk_size` bytes: one 0xEE partition from LBA 1 whose
/// sector count is the whole disk (`disk_size / 512`, as crosvm writes it).
pub fn protective_mbr(disk_size: u64) -> Result<[u8; 512], DiskError> {
    let sectors = u32::try_from(disk_size / SECTOR_SIZE).map_err(|_| DiskError::DiskTooLarge {
        size: disk_size,
        max: MAX_DISK_SIZE,
    })?;
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    // status 0, CHS 0, type 0xEE, CHS 0
    e[4] = 0xee;
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    Ok(mbr)
}

/// The header and footer bytes of a composite disk.
#[derive(Debug, Clone)]
pub struct GptImage {
    /// Bytes `0..20480`: MBR, primary header, entries, padding.
    pub header: Vec<u8>,
    /// Bytes `footer_offset..disk_size` (20480 bytes).
    pub footer: Vec<u8>,
    pub disk_size: u64,
}

/// Builds the header and footer for partitions `entries` (in order; at most 128) when the
/// last partition ends at `footer_offset` (a multiple of 4 KiB, at least 20480).
pub fn build(
    disk_guid: Uuid,
    entries: &[GptEntry],
    footer_offset: u64,
) -> Result<GptImage, DiskError> {
    if entries.len() > GPT_NUM_PARTITIONS {
        return Err(DiskError::TooManyPartitions {
            count: entries.len(),
            max: GPT_NUM_PARTITIONS,
        });
    }
    if footer_offset < GPT_BEGINNING_SIZE || !footer_offset.is_multiple_of(PARTITION_ALIGNMENT) {
        return Err(DiskError::Gpt {
            what: "a new composite disk".into(),
            reason: format!("footer offset {footer_offset} is not 4 KiB aligned after the header"),
        });
    }
    let disk_size = footer_offset
        .checked_add(GPT_FOOTER_SIZE)
        .filter(|&s| s <= MAX_DISK_SIZE)
        .ok_or(DiskError::DiskTooLarge {
            size: footer_offset.saturating_add(GPT_FOOTER_SIZE),
            max: MAX_DISK_SIZE,
        })?;

    let mut table = vec![0u8; GPT_ENTRIES_SIZE];
    for (slot, e) in table.chunks_exact_mut(GPT_ENTRY_SIZE).zip(entries) {
        slot.copy_from_slice(&e.to_bytes());
    }
    let entries_crc32 = crc32fast::hash(&table);

    // Where the backup entries start; the backup header follows them in the last sector.
    let secondary_table_offset = footer_offset + FOOTER_PADDING;
    let backup_lba = disk_size / SECTOR_SIZE - 1;
    let primary = GptHeader {
        current_lba: 1,
        backup_lba,
        first_usable_lba: GPT_BEGINNING_SIZE / SECTOR_SIZE,
        last_usable_lba: secondary_table_offset / SECTOR_SIZE - 1,
        disk_guid,
        entries_lba: 2,
        num_entries: GPT_NUM_PARTITIONS as u32,
        entry_size: GPT_ENTRY_SIZE as u32,
        entries_crc32,
    };
    let backup = GptHeader {
        current_lba: backup_lba,
        backup_lba: 1,
        ..primary.clone()
    };

    let mut header = Vec::with_capacity(GPT_BEGINNING_SIZE as usize);
    header.extend_from_slice(&protective_mbr(disk_size)?);
    header.extend_from_slice(&primary.to_bytes());
    header.resize(2 * SECTOR_SIZE as usize, 0);
    header.extend_from_slice(&table);
    header.resize(GPT_BEGINNING_SIZE as usize, 0);

    let mut footer = vec![0u8; FOOTER_PADDING as usize];
    footer.extend_from_slice(&table);
    footer.extend_from_slice(&backup.to_bytes());
    footer.resize(GPT_FOOTER_SIZE as usize, 0);

    Ok(GptImage {
        header,
        footer,
        disk_size,
    })
}

/// A partition table read back from a disk.
#[derive(Debug, Clone)]
pub struct GptInfo {
    pub disk_size: u64,
    /// Sector count of the protective MBR's 0xEE entry, if there is one.
    pub mbr_sectors: Option<u32>,
    pub primary: GptHeader,
    /// The backup header, or why it could not be read.
    pub backup: Result<GptHeader, String>,
    /// Used entries with their 1-based index in the table.
    pub partitions: Vec<(usize, GptEntry)>,
    /// Inconsistencies that do not stop the table from being read.
    pub warnings: Vec<String>,
}

/// Largest entry array the parser reads.
const MAX_TABLE_BYTES: u64 = 1 << 20;

/// Reads and checks the GPT of `disk` (`what` names it in errors).
pub fn read(disk: &dyn DiskBackend, what: &str) -> Result<GptInfo, DiskError> {
    let gpt_err = |reason: String| DiskError::Gpt {
        what: what.to_string(),
        reason,
    };
    let disk_size = disk.len();
    let sectors = disk_size / SECTOR_SIZE;
    if sectors < 3 {
        return Err(gpt_err(format!(
            "the disk is {disk_size} bytes, too small for a GPT"
        )));
    }
    let mut warnings = Warnings::default();

    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0)?;
    let mbr_sectors = (mbr[510..512] == [0x55, 0xaa])
        .then(|| {
            mbr[446..510]
                .chunks_exact(16)
                .find(|e| e[4] == 0xee)
                .map(|e| u32::from_le_bytes(arr(&e[12..16])))
        })
        .flatten();
    if mbr_sectors.is_none() {
        warnings.push("no protective MBR (0xEE partition) in LBA 0".into());
    }

    let mut sector = [0u8; 512];
    disk.read_exact_at(&mut sector, SECTOR_SIZE)?;
    let primary =
        GptHeader::parse(&sector).map_err(|r| gpt_err(format!("primary header (LBA 1): {r}")))?;
    if primary.current_lba != 1 {
        warnings.push(format!(
            "the primary header says it is at LBA {}",
            primary.current_lba
        ));
    }

    let entry_size = primary.entry_size as u64;
    let table_bytes = entry_size * primary.num_entries as u64;
    if entry_size < GPT_ENTRY_SIZE as u64 || !entry_size.is_multiple_of(8) {
        return Err(gpt_err(format!("entry size {entry_size} is invalid")));
    }
    if table_bytes > MAX_TABLE_BYTES {
        return Err(gpt_err(format!(
            "{} entries of {entry_size} bytes is more than this tool reads ({MAX_TABLE_BYTES} bytes)",
            primary.num_entries
        )));
    }
    let table_offset = primary
        .entries_lba
        .checked_mul(SECTOR_SIZE)
        .filter(|o| {
            o.checked_add(table_bytes)
                .is_some_and(|end| end <= disk_size)
        })
        .ok_or_else(|| {
            gpt_err(format!(
                "the entries at LBA {} do not fit on the disk",
                primary.entries_lba
            ))
        })?;
    let mut table = vec![0u8; table_bytes as usize];
    disk.read_exact_at(&mut table, table_offset)?;
    let crc = crc32fast::hash(&table);
    if crc != primary.entries_crc32 {
        return Err(gpt_err(format!(
            "the partition entries hash to {crc:#010x}, the header says {:#010x}",
            primary.entries_crc32
        )));
    }

    let mut partitions = Vec::new();
    for (i, raw) in table.chunks_exact(entry_size as usize).enumerate() {
        let e = GptEntry::from_bytes(&arr(&raw[..GPT_ENTRY_SIZE]));
        if !e.is_used() {
            continue;
        }
        let n = i + 1;
        if e.last_lba < e.first_lba {
            warnings.push(format!(
                "partition {n} ends (LBA {}) before it starts (LBA {})",
                e.last_lba, e.first_lba
            ));
        } else if e.first_lba < primary.first_usable_lba || e.last_lba > primary.last_usable_lba {
            warnings.push(format!(
                "partition {n} (LBA {}..={}) is outside the usable LBAs {}..={}",
                e.first_lba, e.last_lba, primary.first_usable_lba, primary.last_usable_lba
            ));
        }
        partitions.push((n, e));
    }
    // Overlaps in one sweep by start LBA (a table of 8192 entries has 33 million pairs): each
    // partition that starts inside one before it is reported once, with the one reaching
    // furthest.
    let mut by_start: Vec<&(usize, GptEntry)> = partitions
        .iter()
        .filter(|(_, e)| e.first_lba <= e.last_lba)
        .collect();
    by_start.sort_by_key(|(n, e)| (e.first_lba, *n));
    let mut furthest: Option<&(usize, GptEntry)> = None;
    for p in by_start {
        match furthest {
            Some((nf, f)) if p.1.first_lba <= f.last_lba => {
                let (a, b) = ((*nf).min(p.0), (*nf).max(p.0));
                warnings.push(format!("partitions {a} and {b} overlap"));
                if p.1.last_lba > f.last_lba {
                    furthest = Some(p);
                }
            }
            _ => furthest = Some(p),
        }
    }

    let backup = read_backup(disk, &primary);
    match &backup {
        Ok(b) => {
            if b.current_lba != sectors - 1 {
                warnings.push(format!(
                    "the backup header is at LBA {}, not at the end of the disk (LBA {})",
                    b.current_lba,
                    sectors - 1
                ));
            }
            if b.disk_guid != primary.disk_guid || b.entries_crc32 != primary.entries_crc32 {
                warnings.push("the backup header does not match the primary header".into());
            }
        }
        Err(r) => warnings.push(format!("backup header: {r}")),
    }
    if let Some(s) = mbr_sectors
        && s as u64 != sectors
        && s as u64 != sectors - 1
        && s != u32::MAX
    {
        warnings.push(format!(
            "the protective MBR covers {s} sectors; the disk has {sectors}"
        ));
    }

    Ok(GptInfo {
        disk_size,
        mbr_sectors,
        primary,
        backup,
        partitions,
        warnings: warnings.finish(),
    })
}

/// Most warnings [`read`] lists; a last one counts the rest.
pub const MAX_WARNINGS: usize = 32;

/// Warnings, the first [`MAX_WARNINGS`] kept and the rest counted (a hostile table can have
/// thousands of bad entries).
#[derive(Default)]
struct Warnings {
    kept: Vec<String>,
    dropped: usize,
}

impl Warnings {
    fn push(&mut self, w: String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(w);
        } else {
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("... and {} more warnings", self.dropped));
        }
        self.kept
    }
}

fn read_backup(disk: &dyn DiskBackend, primary: &GptHeader) -> Result<GptHeader, String> {
    let offset = primary
        .backup_lba
        .checked_mul(SECTOR_SIZE)
        .filter(|o| o.checked_add(SECTOR_SIZE).is_some_and(|e| e <= disk.len()))
        .ok_or_else(|| format!("LBA {} is past the end of the disk", primary.backup_lba))?;
    let mut sector = [0u8; 512];
    disk.read_exact_at(&mut sector, offset)
        .map_err(|e| e.to_string())?;
    GptHeader::parse(&sector).map_err(|r| format!("LBA {}: {r}", primary.backup_lba))
}

/// `b` as a fixed-size array; callers pass slices of exactly `N` bytes.
fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::composite::{Component, CompositeDisk, Source};

    fn entry(label: &str, first: u64, last: u64, unique: u128) -> GptEntry {
        GptEntry {
            type_guid: LINUX_FILESYSTEM_GUID,
            unique_guid: Uuid::from_u128(unique),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: encode_name(label).unwrap(),
        }
    }

    #[test]
    fn constants() {
        assert_eq!(FOOTER_PADDING, 3584);
        assert_eq!(GPT_FOOTER_SIZE, 20480);
        assert_eq!(GPT_BEGINNING_SIZE, 20480);
        assert_eq!(GPT_END_SIZE, 16896);
        assert_eq!(GPT_ENTRIES_SIZE, 16384);
    }

    #[test]
    fn guid_byte_order() {
        assert_eq!(
            guid_to_bytes(LINUX_FILESYSTEM_GUID),
            [
                0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
                0x7d, 0xe4
            ]
        );
        assert_eq!(
            LINUX_FILESYSTEM_GUID.to_string().to_uppercase(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        let g = Uuid::new_v4();
        assert_eq!(guid_from_bytes(guid_to_bytes(g)), g);
    }

    #[test]
    fn names() {
        let n = encode_name("vm-instance").unwrap();
        assert_eq!(n[0], b'v' as u16);
        assert_eq!(n[10], b'e' as u16);
        assert_eq!(n[11], 0);
        assert!(encode_name(&"x".repeat(36)).is_ok());
        let e = encode_name(&"x".repeat(37)).unwrap_err();
        assert!(e.to_string().contains("37 UTF-16 code units"), "{e}");
        // A character outside the BMP takes two units.
        assert!(encode_name(&format!("{}\u{1F600}", "x".repeat(34))).is_ok());
        assert!(encode_name(&format!("{}\u{1F600}", "x".repeat(35))).is_err());
        assert!(encode_name("a\0b").is_err());
        let e = entry("payload-metadata", 40, 47, 1);
        assert_eq!(e.name_string(), "payload-metadata");
    }

    #[test]
    fn mbr_fields() {
        let mbr = protective_mbr(1 << 20).unwrap();
        assert!(mbr[..446].iter().all(|&b| b == 0));
        assert_eq!(
            &mbr[446..462],
            &[0, 0, 0, 0, 0xee, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x08, 0, 0]
        );
        assert!(mbr[462..510].iter().all(|&b| b == 0));
        assert_eq!(&mbr[510..], &[0x55, 0xaa]);
        assert!(protective_mbr(MAX_DISK_SIZE).is_ok());
        assert!(matches!(
            protective_mbr(MAX_DISK_SIZE + SECTOR_SIZE),
            Err(DiskError::DiskTooLarge { .. })
        ));
    }

    #[test]
    fn entry_bytes() {
        let e = entry("ab", 40, 47, 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        let b = e.to_bytes();
        assert_eq!(&b[0..4], &[0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(
            &b[16..32],
            &[
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(&b[32..40], &40u64.to_le_bytes());
        assert_eq!(&b[40..48], &47u64.to_le_bytes());
        assert_eq!(&b[48..56], &[0; 8]);
        assert_eq!(&b[56..62], &[b'a', 0, b'b', 0, 0, 0]);
        assert_eq!(GptEntry::from_bytes(&b), e);
        assert_eq!(e.size(), 4096);
        // Hostile LBAs do not overflow.
        let mut h = e.clone();
        h.last_lba = u64::MAX;
        assert_eq!(h.size(), u64::MAX);
        h.first_lba = u64::MAX;
        h.last_lba = 0;
        assert_eq!(h.size(), 0);
    }

    /// A header from fixed inputs, checked byte by byte and against an independently
    /// computed CRC32 (IEEE, as in zlib).
    #[test]
    fn header_bytes_and_crc() {
        let h = GptHeader {
            current_lba: 1,
            backup_lba: 0x7f,
            first_usable_lba: 40,
            last_usable_lba: 0x57,
            disk_guid: Uuid::from_u128(0x12345678_9abc_def0_1122_334455667788),
            entries_lba: 2,
            num_entries: 128,
            entry_size: 128,
            entries_crc32: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..16], b"EFI PART\0\0\x01\0\x5c\0\0\0");
        assert_eq!(&b[20..24], &[0; 4]);
        assert_eq!(&b[24..32], &1u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x7fu64.to_le_bytes());
        assert_eq!(
            &b[56..72],
            &[
                0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                0x77, 0x88
            ]
        );
        assert_eq!(
            &b[80..92],
            &[128, 0, 0, 0, 128, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]
        );
        let mut zeroed = b;
        zeroed[16..20].fill(0);
        assert_eq!(
            u32::from_le_bytes(b[16..20].try_into().unwrap()),
            crc32_reference(&zeroed)
        );
        assert_eq!(GptHeader::parse(&b).unwrap(), h);
        let mut bad = b;
        bad[30] ^= 1;
        assert!(GptHeader::parse(&bad).unwrap_err().contains("CRC32"));
    }

    /// Bitwise CRC-32 (reflected polynomial 0xEDB88320), independent of crc32fast.
    fn crc32_reference(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc_reference_vector() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32_reference(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn layout_of_built_tables() {
        let guid = Uuid::from_u128(0xabcdef);
        // Two partitions: 4 KiB at LBA 40, 8 KiB at LBA 48.
        let entries = [entry("a", 40, 47, 1), entry("b", 48, 63, 2)];
        let footer_offset = 20480 + 4096 + 8192;
        let img = build(guid, &entries, footer_offset).unwrap();
        assert_eq!(img.header.len(), 20480);
        assert_eq!(img.footer.len(), 20480);
        let disk_size = footer_offset + 3584 + 16896;
        assert_eq!(img.disk_size, disk_size);

        // MBR: whole disk.
        assert_eq!(
            u32::from_le_bytes(img.header[458..462].try_into().unwrap()) as u64,
            disk_size / 512
        );
        // Primary header.
        let p = GptHeader::parse(&img.header[512..1024]).unwrap();
        assert_eq!(p.current_lba, 1);
        assert_eq!(p.backup_lba, disk_size / 512 - 1);
        assert_eq!(p.first_usable_lba, 40);
        assert_eq!(p.last_usable_lba, (footer_offset + 3584) / 512 - 1);
        assert_eq!(p.entries_lba, 2);
        assert_eq!(p.disk_guid, guid);
        assert!(img.header[512 + 92..1024].iter().all(|&b| b == 0));
        // Entries and their CRC.
        let table = &img.header[1024..1024 + 16384];
        assert_eq!(p.entries_crc32, crc32_reference(table));
        assert_eq!(&table[..128], &entries[0].to_bytes());
        assert_eq!(&table[128..256], &entries[1].to_bytes());
        assert!(table[256..].iter().all(|&b| b == 0));
        assert!(img.header[17408..].iter().all(|&b| b == 0));
        // Footer: padding, the same entries, the backup header in the last sector.
        assert!(img.footer[..3584].iter().all(|&b| b == 0));
        assert_eq!(&img.footer[3584..3584 + 16384], table);
        let b = GptHeader::parse(&img.footer[20480 - 512..]).unwrap();
        assert_eq!(b.current_lba, disk_size / 512 - 1);
        assert_eq!(b.backup_lba, 1);
        assert_eq!(b.entries_lba, 2);
        assert_eq!(b.entries_crc32, p.entries_crc32);
        assert!(img.footer[20480 - 512 + 92..].iter().all(|&b| b == 0));
    }

    #[test]
    fn build_limits() {
        let many: Vec<GptEntry> = (0..129).map(|i| entry("x", 40, 47, i)).collect();
        assert!(matches!(
            build(Uuid::nil(), &many, 1 << 20),
            Err(DiskError::TooManyPartitions { count: 129, .. })
        ));
        assert!(build(Uuid::nil(), &[], 20480 + 1).is_err());
        assert!(build(Uuid::nil(), &[], 4096).is_err());
        assert!(matches!(
            build(Uuid::nil(), &[], MAX_DISK_SIZE & !4095),
            Err(DiskError::DiskTooLarge { .. })
        ));
        assert!(matches!(
            build(Uuid::nil(), &[], u64::MAX - 4095),
            Err(DiskError::DiskTooLarge { .. })
        ));
    }

    fn memory_disk(bytes: Vec<u8>) -> CompositeDisk {
        let len = bytes.len() as u64;
        CompositeDisk::new(
            vec![Component::new(0, len, Source::Memory(bytes))],
            "test".into(),
        )
        .unwrap()
    }

    #[test]
    fn parse_round_trip() {
        let guid = Uuid::new_v4();
        let entries = [entry("first", 40, 47, 1), entry("second", 48, 55, 2)];
        let img = build(guid, &entries, 20480 + 8192).unwrap();
        let mut bytes = img.header.clone();
        bytes.resize(20480 + 8192, 0);
        bytes.extend_from_slice(&img.footer);
        let info = read(&memory_disk(bytes.clone()), "test").unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.primary.disk_guid, guid);
        assert_eq!(info.backup.as_ref().unwrap().disk_guid, guid);
        assert_eq!(info.partitions.len(), 2);
        assert_eq!(info.partitions[1].0, 2);
        assert_eq!(info.partitions[1].1, entries[1]);
        assert_eq!(info.mbr_sectors, Some((bytes.len() / 512) as u32));

        // A corrupt entry table is an error.
        let mut bad = bytes.clone();
        bad[1024 + 40] ^= 1;
        let e = read(&memory_disk(bad), "test").unwrap_err();
        assert!(e.to_string().contains("partition entries hash"), "{e}");

        // A corrupt backup header is only a warning.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 512 + 40] ^= 1;
        let info = read(&memory_disk(bad), "test").unwrap();
        assert!(info.backup.is_err());
        assert_eq!(info.warnings.len(), 1);

        // No GPT at all.
        let e = read(&memory_disk(vec![0u8; 8192]), "blank").unwrap_err();
        assert!(e.to_string().contains("blank"), "{e}");
        assert!(read(&memory_disk(vec![0u8; 1024]), "tiny").is_err());
    }

    #[test]
    fn parser_bounds_hostile_headers() {
        let mut bytes = vec![0u8; 8192];
        let mut h = GptHeader {
            current_lba: 1,
            backup_lba: u64::MAX,
            first_usable_lba: 40,
            last_usable_lba: 10,
            disk_guid: Uuid::nil(),
            entries_lba: u64::MAX / 2,
            num_entries: u32::MAX,
            entry_size: 128,
            entries_crc32: 0,
        };
        bytes[512..604].copy_from_slice(&h.to_bytes());
        let e = read(&memory_disk(bytes.clone()), "t").unwrap_err();
        assert!(e.to_string().contains("more than this tool reads"), "{e}");
        h.num_entries = 4;
        bytes[512..604].copy_from_slice(&h.to_bytes());
        let e = read(&memory_disk(bytes.clone()), "t").unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        h.entry_size = 7;
        bytes[512..604].copy_from_slice(&h.to_bytes());
        assert!(read(&memory_disk(bytes), "t").is_err());
    }

    #[test]
    fn warnings_stay_bounded_for_a_table_of_overlapping_entries() {
        // 2048 used entries, all on the same LBAs: every pair overlaps (2 million pairs).
        let n = 2048usize;
        let table: Vec<u8> = (0..n)
            .flat_map(|i| entry("x", 40, 47, i as u128 + 1).to_bytes())
            .collect();
        let h = GptHeader {
            current_lba: 1,
            backup_lba: 1,
            first_usable_lba: 34,
            last_usable_lba: 100,
            disk_guid: Uuid::nil(),
            entries_lba: 2,
            num_entries: n as u32,
            entry_size: 128,
            entries_crc32: crc32fast::hash(&table),
        };
        let mut bytes = vec![0u8; 1024];
        bytes[512..604].copy_from_slice(&h.to_bytes());
        bytes.extend_from_slice(&table);
        bytes.resize(bytes.len() + 4096, 0);
        let info = read(&memory_disk(bytes), "t").unwrap();
        assert_eq!(info.partitions.len(), n);
        assert!(
            info.warnings.len() <= MAX_WARNINGS + 1,
            "{}",
            info.warnings.len()
        );
        assert!(info.warnings.iter().any(|w| w.contains("overlap")));
        let last = info.warnings.last().unwrap();
        assert!(last.contains("more warnings"), "{last}");
    }
}
