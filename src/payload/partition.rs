//! Writable partitions of an app VM, as Android 15's `initializeWritablePartition` creates
//! them: the instance image (`vm-instance`), the encrypted storage (`encryptedstore`), raw
//! partitions; and the 64-byte instance id.
//!
//! A partition is a sparse raw file of `round_up(size, 4096)` bytes with a format header at
//! offset 0 (nothing for raw). Files are written to a temporary file in the destination's
//! directory and renamed into place, so a failure leaves nothing behind and a reader never
//! sees a half-written file.
//!
//! Symbolic links at the destination are refused, not followed: creating a partition replaces
//! a regular file (like Android, which truncates it) but never writes through a link. The
//! check and the rename are not one atomic step; if a link appears in between, the rename
//! replaces the link itself, so the link's target is still never written.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Partitions are sized in multiples of this (`PARTITION_GRANULARITY_BYTES`).
pub const PARTITION_GRANULARITY: u64 = 4096;
/// Largest partition created (requested size).
pub const MAX_PARTITION_SIZE: u64 = 1 << 40;
/// Magic at the start of an instance image.
pub const INSTANCE_MAGIC: &[u8; 19] = b"Android-VM-instance";
/// The instance image format version written and accepted.
pub const INSTANCE_VERSION: u16 = 1;
/// Magic of encrypted storage the guest has not formatted yet.
pub const ENCRYPTEDSTORE_MAGIC: &[u8; 19] = b"UNFORMATTED-STORAGE";
/// Bytes in an instance id.
pub const INSTANCE_ID_LEN: usize = 64;
/// Size of an instance image (`INSTANCE_FILE_SIZE`).
pub const DEFAULT_INSTANCE_SIZE: u64 = 10 << 20;

/// Errors creating or checking partitions and instance ids; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("partition size {size}: {reason}")]
    InvalidSize { size: String, reason: String },
    #[error("unknown partition type {0:?} (raw, instance or encryptedstore)")]
    UnknownType(String),
    #[error("{path:?}: {reason}")]
    Destination { path: PathBuf, reason: &'static str },
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("instance id file {path:?} holds {size} bytes; an instance id is exactly 64")]
    InstanceIdSize { path: PathBuf, size: u64 },
    #[error("{path:?} is not an instance image: {reason}")]
    NotInstanceImage { path: PathBuf, reason: String },
    #[error("getrandom: {0}")]
    Random(#[source] io::Error),
}

/// What a partition holds when created (Android's `PartitionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PartitionType {
    /// All zeros.
    Raw = 0,
    /// `vm-instance`: [`INSTANCE_MAGIC`] then [`INSTANCE_VERSION`] as u16 LE.
    Instance = 1,
    /// `encryptedstore`: [`ENCRYPTEDSTORE_MAGIC`]; the guest formats it on first boot.
    EncryptedStore = 2,
}

impl PartitionType {
    /// The bytes written at offset 0.
    pub fn header(self) -> Vec<u8> {
        match self {
            PartitionType::Raw => Vec::new(),
            PartitionType::Instance => {
                let mut h = INSTANCE_MAGIC.to_vec();
                h.extend_from_slice(&INSTANCE_VERSION.to_le_bytes());
                h
            }
            PartitionType::EncryptedStore => ENCRYPTEDSTORE_MAGIC.to_vec(),
        }
    }
}

impl FromStr for PartitionType {
    type Err = PartitionError;

    /// `raw`, `instance` or `encryptedstore` (as the `vm create-partition --type` values).
    fn from_str(s: &str) -> Result<PartitionType, PartitionError> {
        match s {
            "raw" => Ok(PartitionType::Raw),
            "instance" => Ok(PartitionType::Instance),
            "encryptedstore" => Ok(PartitionType::EncryptedStore),
            _ => Err(PartitionError::UnknownType(s.into())),
        }
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionType::Raw => "raw",
            PartitionType::Instance => "instance",
            PartitionType::EncryptedStore => "encryptedstore",
        })
    }
}

/// Parses a size: a number of bytes, or a number with a binary suffix `K`, `M`, `G` or `T`
/// (upper or lower case, optionally followed by `iB`).
pub fn parse_size(text: &str) -> Result<u64, PartitionError> {
    let bad = |reason: &str| PartitionError::InvalidSize {
        size: format!("{text:?}"),
        reason: reason.into(),
    };
    let t = text.trim();
    let t = t.strip_suffix("iB").unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("unknown suffix (use K, M, G or T)")),
            };
            (t.get(..i).unwrap_or_default(), shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number of bytes (like 4096, 64K or 10M)"));
    }
    let n: u64 = digits.parse().map_err(|_| bad("too large"))?;
    n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))
}

/// Creates the partition image `path` of `size` bytes rounded up to 4096, sparse, with the
/// header of `kind`; replaces a regular file already there. Returns the file's size.
pub fn create_partition(
    path: &Path,
    size: u64,
    kind: PartitionType,
) -> Result<u64, PartitionError> {
    let bad = |reason: &str| PartitionError::InvalidSize {
        size: size.to_string(),
        reason: reason.into(),
    };
    if size == 0 {
        return Err(bad("must not be 0"));
    }
    if size > MAX_PARTITION_SIZE {
        return Err(bad("larger than the 1 TiB allowed"));
    }
    let len = size.div_ceil(PARTITION_GRANULARITY) * PARTITION_GRANULARITY;
    let header = kind.header();
    write_atomically(path, Replace::Yes, |file, tmp| {
        let io_err = |op, source| PartitionError::Io {
            op,
            path: tmp.to_path_buf(),
            source,
        };
        file.set_len(len).map_err(|e| io_err("truncate", e))?;
        file.write_all_at(&header, 0)
            .map_err(|e| io_err("write", e))
    })?;
    Ok(len)
}

/// Reads the header of the instance image `path` (a file or a block device): `Ok` if it
/// starts with [`INSTANCE_MAGIC`] and version [`INSTANCE_VERSION`].
pub fn check_instance_image(path: &Path) -> Result<(), PartitionError> {
    let io_err = |op, source| PartitionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| io_err("open", e))?;
    let mut header = Vec::with_capacity(INSTANCE_MAGIC.len() + 2);
    file.take(INSTANCE_MAGIC.len() as u64 + 2)
        .read_to_end(&mut header)
        .map_err(|e| io_err("read", e))?;
    check_instance_header(&header).map_err(|reason| PartitionError::NotInstanceImage {
        path: path.to_path_buf(),
        reason,
    })
}

/// [`check_instance_image`] on the first bytes of the image.
pub fn check_instance_header(header: &[u8]) -> Result<(), String> {
    let (magic, rest) = header.split_at(header.len().min(INSTANCE_MAGIC.len()));
    if magic != INSTANCE_MAGIC {
        return Err(if header.iter().all(|&b| b == 0) {
            "no header (all zeros)".into()
        } else {
            format!("bad magic {:?}", String::from_utf8_lossy(magic))
        });
    }
    let version = match rest {
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => return Err("truncated after the magic".into()),
    };
    if version != INSTANCE_VERSION {
        return Err(format!(
            "version {version} is not supported (only {INSTANCE_VERSION})"
        ));
    }
    Ok(())
}

/// A VM instance id: 64 random bytes identifying one VM instance (Android 15's
/// `allocateInstanceId`), passed to the guest in the device tree.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceId(pub [u8; INSTANCE_ID_LEN]);

impl InstanceId {
    /// A new id from the kernel's random source (`getrandom(2)`).
    pub fn random() -> Result<InstanceId, PartitionError> {
        let mut id = [0u8; INSTANCE_ID_LEN];
        fill_random(&mut id).map_err(PartitionError::Random)?;
        Ok(InstanceId(id))
    }

    pub fn as_bytes(&self) -> &[u8; INSTANCE_ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl fmt::Display for InstanceId {
    /// Lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Reads the instance id stored in `path` (exactly 64 bytes), or, if there is no such file,
/// allocates one and stores it. Creation is atomic and never replaces a file: when two
/// callers race, both get the id that was stored first.
pub fn read_or_allocate_instance_id(path: &Path) -> Result<InstanceId, PartitionError> {
    match read_instance_id(path) {
        Err(PartitionError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let id = InstanceId::random()?;
    let stored = write_atomically(path, Replace::No, |file, tmp| {
        file.write_all_at(id.as_bytes(), 0)
            .map_err(|source| PartitionError::Io {
                op: "write",
                path: tmp.to_path_buf(),
                source,
            })
    });
    match stored {
        Ok(()) => Ok(id),
        Err(PartitionError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            read_instance_id(path)
        }
        Err(e) => Err(e),
    }
}

/// Reads an instance id file: a regular file of exactly 64 bytes.
pub fn read_instance_id(path: &Path) -> Result<InstanceId, PartitionError> {
    let io_err = |op, source| PartitionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| io_err("open", e))?;
    let meta = file.metadata().map_err(|e| io_err("stat", e))?;
    if !meta.is_file() {
        return Err(PartitionError::Destination {
            path: path.to_path_buf(),
            reason: "an instance id file must be a regular file",
        });
    }
    let mut data = Vec::with_capacity(INSTANCE_ID_LEN + 1);
    file.take(INSTANCE_ID_LEN as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| io_err("read", e))?;
    let id: [u8; INSTANCE_ID_LEN] =
        data.as_slice()
            .try_into()
            .map_err(|_| PartitionError::InstanceIdSize {
                path: path.to_path_buf(),
                size: meta.len(),
            })?;
    Ok(InstanceId(id))
}

/// Fills `buf` from `getrandom(2)`, retrying on EINTR and short reads.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the duration
        // of the call; getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Whether [`write_atomically`] may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Replace a regular file (rename).
    Yes,
    /// Fail with `AlreadyExists` if anything is there (link).
    No,
}

/// Writes `path` through a temporary file in its directory (mode 0600): `fill` writes the
/// content, then it is synced and moved into place, and the directory is synced. On failure
/// the temporary file is removed. A symlink or non-regular file at `path` is refused.
fn write_atomically(
    path: &Path,
    replace: Replace,
    fill: impl FnOnce(&File, &Path) -> Result<(), PartitionError>,
) -> Result<(), PartitionError> {
    let dest_err = |reason| PartitionError::Destination {
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |op, path: &Path, source| PartitionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| dest_err("not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(dest_err(
                "is a symbolic link; refusing to follow or replace it",
            ));
        }
        Ok(m) if !m.is_file() => return Err(dest_err("exists and is not a regular file")),
        Ok(_) if replace == Replace::No => {
            return Err(io_err(
                "create",
                path,
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path, e)),
    }
    let tmp = crate::fsutil::temp_beside(&dir.join(name)).map_err(|e| io_err("create", path, e))?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    let guard = RemoveOnDrop(&tmp);
    fill(&file, &tmp)?;
    file.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    drop(file);
    match replace {
        Replace::Yes => {
            fs::rename(&tmp, path).map_err(|e| io_err("rename into", path, e))?;
            // The temporary name is gone.
            std::mem::forget(guard);
        }
        // link(2) fails if `path` exists, where rename would replace it. The guard then
        // removes the temporary name.
        Replace::No => fs::hard_link(&tmp, path).map_err(|e| io_err("create", path, e))?,
    }
    // Make the new directory entry durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync", dir, e))
}

/// Removes the temporary file when dropped (on failure, or after it was linked into place).
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::payload::testutil::TempDir;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        for bad in [
            "",
            "M",
            "-1",
            "1.5M",
            "10X",
            "99999999999999999999",
            "16777216T",
            "1 M",
        ] {
            assert!(
                matches!(parse_size(bad), Err(PartitionError::InvalidSize { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn types() {
        for (s, t, v) in [
            ("raw", PartitionType::Raw, 0),
            ("instance", PartitionType::Instance, 1),
            ("encryptedstore", PartitionType::EncryptedStore, 2),
        ] {
            assert_eq!(s.parse::<PartitionType>().unwrap(), t);
            assert_eq!(t.to_string(), s);
            assert_eq!(t as u32, v);
        }
        assert!("qcow2".parse::<PartitionType>().is_err());
        let h = PartitionType::Instance.header();
        assert_eq!(h.len(), 21);
        assert_eq!(&h[..19], b"Android-VM-instance");
        assert_eq!(&h[19..], [1, 0]);
        assert_eq!(
            PartitionType::EncryptedStore.header(),
            b"UNFORMATTED-STORAGE"
        );
    }

    #[test]
    fn create_instance_image() {
        let dir = TempDir::new("part-instance");
        let path = dir.path().join("instance.img");
        let len = create_partition(&path, DEFAULT_INSTANCE_SIZE, PartitionType::Instance).unwrap();
        assert_eq!(len, 10 << 20);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 10 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            meta.blocks()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let data = fs::read(&path).unwrap();
        assert_eq!(&data[..21], b"Android-VM-instance\x01\x00");
        assert!(data[21..].iter().all(|&b| b == 0));
        check_instance_image(&path).unwrap();
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn create_rounds_up_and_replaces() {
        let dir = TempDir::new("part-raw");
        let path = dir.file("store.img", &[0xff; 10000]);
        assert_eq!(
            create_partition(&path, 5000, PartitionType::EncryptedStore).unwrap(),
            8192
        );
        let data = fs::read(&path).unwrap();
        assert_eq!(data.len(), 8192);
        assert_eq!(&data[..19], b"UNFORMATTED-STORAGE");
        assert!(data[19..].iter().all(|&b| b == 0), "old content left");
        let e = check_instance_image(&path).unwrap_err();
        assert!(matches!(e, PartitionError::NotInstanceImage { .. }), "{e}");
        assert_eq!(
            create_partition(&path, 1, PartitionType::Raw).unwrap(),
            4096
        );
        assert!(fs::read(&path).unwrap().iter().all(|&b| b == 0));
        let e = check_instance_image(&path).unwrap_err();
        assert!(e.to_string().contains("all zeros"), "{e}");
    }

    #[test]
    fn create_refuses_bad_sizes_and_destinations() {
        let dir = TempDir::new("part-bad");
        let path = dir.path().join("p.img");
        for size in [0, MAX_PARTITION_SIZE + 1, u64::MAX] {
            let e = create_partition(&path, size, PartitionType::Raw).unwrap_err();
            assert!(
                matches!(e, PartitionError::InvalidSize { .. }),
                "{size}: {e}"
            );
        }
        assert!(!path.exists());
        // A symlink is neither followed nor replaced.
        let target = dir.file("target", b"keep");
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_partition(&link, 4096, PartitionType::Raw).unwrap_err();
        assert!(matches!(e, PartitionError::Destination { .. }), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A directory; a missing directory.
        let e = create_partition(dir.path(), 4096, PartitionType::Raw).unwrap_err();
        assert!(matches!(e, PartitionError::Destination { .. }), "{e}");
        let e =
            create_partition(&dir.path().join("no/p.img"), 4096, PartitionType::Raw).unwrap_err();
        assert!(matches!(e, PartitionError::Io { .. }), "{e}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn instance_header_checks() {
        let mut good = PartitionType::Instance.header();
        assert!(check_instance_header(&good).is_ok());
        good[19] = 2;
        assert!(
            check_instance_header(&good)
                .unwrap_err()
                .contains("version 2")
        );
        good[19] = 0;
        assert!(
            check_instance_header(&good)
                .unwrap_err()
                .contains("version 0")
        );
        assert!(check_instance_header(&good[..20]).is_err());
        assert!(check_instance_header(b"").is_err());
        assert!(check_instance_header(b"Android-VM-instancX\x01\x00").is_err());
        let dir = TempDir::new("part-check");
        let e = check_instance_image(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, PartitionError::Io { .. }), "{e}");
    }

    #[test]
    fn instance_ids() {
        let dir = TempDir::new("part-id");
        let path = dir.path().join("instance_id");
        let id = read_or_allocate_instance_id(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), id.as_bytes());
        assert_ne!(id.as_bytes(), &[0u8; 64], "not random");
        assert_eq!(read_or_allocate_instance_id(&path).unwrap(), id);
        assert_ne!(InstanceId::random().unwrap(), id);
        assert_eq!(id.to_string().len(), 128);
        assert!(leftovers(dir.path()).is_empty());
        for size in [0usize, 63, 65, 4096] {
            let p = dir.file("bad_id", &vec![1u8; size]);
            let e = read_or_allocate_instance_id(&p).unwrap_err();
            assert!(
                matches!(e, PartitionError::InstanceIdSize { size: s, .. } if s == size as u64),
                "{size}: {e}"
            );
        }
        let e = read_or_allocate_instance_id(dir.path()).unwrap_err();
        assert!(matches!(e, PartitionError::Destination { .. }), "{e}");
        // Losing a creation race returns the winner's id.
        let winner = [7u8; 64];
        let raced = dir.path().join("raced_id");
        let e = write_atomically(&raced, Replace::No, |f, _| {
            fs::write(&raced, winner).unwrap();
            f.write_all_at(&[1; 64], 0).map_err(PartitionError::Random)
        })
        .unwrap_err();
        assert!(
            matches!(&e, PartitionError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(fs::read(&raced).unwrap(), winner);
        assert!(leftovers(dir.path()).is_empty());
    }
}
