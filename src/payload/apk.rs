//! Reading an APK: a zip archive from an untrusted source.
//!
//! [`Apk`] opens a zip from a file, a block device or any `Read + Seek`, reads single entries
//! with a size cap ([`Apk::read_entry`]) and extracts the whole archive into an empty
//! directory ([`Apk::extract_all`]), which is how the guest agent exposes the APK at
//! `/mnt/apk`.
//!
//! On a block device (the guest's `microdroid-apk` partition) the APK is followed by up to
//! 4095 zero bytes, because partitions are 4 KiB aligned. [`find_zip_end`] finds where the zip
//! really ends, and the archive is read through a [`ByteRange`] of that length, so the zip
//! reader sees exactly the APK.
//!
//! Only the "stored" and "deflate" methods are supported (the only ones APKs use); encrypted
//! entries are refused. Errors name the APK and the entry.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

/// Size of the zip End Of Central Directory record without its comment.
pub const EOCD_LEN: u64 = 22;
/// Longest zip archive comment (its length is a u16).
pub const MAX_COMMENT_LEN: u64 = 0xffff;
/// Most zero bytes accepted after the end of the zip (padding to a 4 KiB partition).
pub const MAX_TRAILING_ZEROS: u64 = 4095;
/// How far back from the end [`find_zip_end`] looks for the End Of Central Directory record.
pub const EOCD_SEARCH_WINDOW: u64 = EOCD_LEN + MAX_COMMENT_LEN + 1 + MAX_TRAILING_ZEROS + 1;

const EOCD_SIGNATURE: [u8; 4] = *b"PK\x05\x06";
/// File type bits of a Unix mode.
const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

/// Errors reading an APK. Each names the APK, and the entry when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ApkError {
    #[error("cannot open APK {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("APK {path:?} is not a regular file or a block device")]
    NotAFile { path: PathBuf },
    #[error("APK {path:?} is empty (0 bytes)")]
    Empty { path: PathBuf },
    #[error("APK {path:?} is not a zip archive: {reason}")]
    NotAZip { path: PathBuf, reason: String },
    #[error("reading APK {path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("APK {apk:?} has no entry {entry:?}")]
    NoEntry { apk: PathBuf, entry: String },
    #[error("{entry:?} in APK {apk:?} is a directory, not a file")]
    IsDirectory { apk: PathBuf, entry: String },
    #[error("{entry:?} in APK {apk:?} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        apk: PathBuf,
        entry: String,
        size: u64,
        max: u64,
    },
    #[error("{entry:?} in APK {apk:?}: unsupported: {reason}")]
    Unsupported {
        apk: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{entry:?} in APK {apk:?} is corrupted: {reason}")]
    Corrupt {
        apk: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("entry {entry:?} in APK {apk:?} cannot be extracted: {reason}")]
    UnsafeEntry {
        apk: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("APK {apk:?}: {what} exceeds the extraction limit of {limit}")]
    Limit {
        apk: PathBuf,
        what: String,
        limit: u64,
    },
    #[error(
        "{entry:?} in APK {apk:?} expands {size} bytes from {compressed} (more than {max_ratio}:1): \
         refusing a possible zip bomb"
    )]
    ZipBomb {
        apk: PathBuf,
        entry: String,
        size: u64,
        compressed: u64,
        max_ratio: u64,
    },
    #[error("extraction destination {path:?}: {reason}")]
    Destination { path: PathBuf, reason: String },
    #[error("extracting APK {apk:?}: cannot write {path:?}: {source}")]
    Write {
        apk: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
}

/// The bytes `[start, start + len)` of `inner`, as a `Read + Seek` of length `len`.
///
/// Reads past the end return 0 bytes (end of file); seeks are relative to `start`.
#[derive(Debug)]
pub struct ByteRange<R> {
    inner: R,
    start: u64,
    len: u64,
    /// Position inside the range.
    pos: u64,
    /// Whether `inner` is known to be at `start + pos` (saves a seek per read).
    in_sync: bool,
}

impl<R: Read + Seek> ByteRange<R> {
    /// A view of `len` bytes of `inner` from `start`. The range is not checked against the
    /// length of `inner`: a shorter `inner` just ends early.
    pub fn new(inner: R, start: u64, len: u64) -> ByteRange<R> {
        ByteRange {
            inner,
            start,
            len,
            pos: 0,
            in_sync: false,
        }
    }

    /// Length of the range.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read + Seek> Read for ByteRange<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if !self.in_sync {
            let at = self.start.checked_add(self.pos).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "range offset overflows")
            })?;
            self.inner.seek(SeekFrom::Start(at))?;
            self.in_sync = true;
        }
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.inner.read(&mut buf[..want]).inspect_err(|_| {
            self.in_sync = false;
        })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for ByteRange<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if new != self.pos {
            self.pos = new;
            self.in_sync = false;
        }
        Ok(new)
    }
}

/// Finds where the zip archive in `reader` ends: just after its End Of Central Directory
/// record and comment. Only zero bytes (at most [`MAX_TRAILING_ZEROS`]) may follow it, as on a
/// 4 KiB-aligned partition holding an APK.
///
/// Looks at the last [`EOCD_SEARCH_WINDOW`] bytes only. A candidate record counts when its
/// comment fits before the end of the data, everything after the comment is zero, and (for a
/// non-zip64 record) its central directory lies before it. Returns `None` when there is none.
pub fn find_zip_end<R: Read + Seek>(reader: &mut R) -> io::Result<Option<u64>> {
    let total = reader.seek(SeekFrom::End(0))?;
    let window_start = total.saturating_sub(EOCD_SEARCH_WINDOW);
    reader.seek(SeekFrom::Start(window_start))?;
    let mut window = Vec::new();
    reader.take(EOCD_SEARCH_WINDOW).read_to_end(&mut window)?;
    Ok(find_eocd_end_in(&window, window_start).map(|end| window_start + end as u64))
}

/// [`find_zip_end`] over the last bytes of the data, `window`, which starts at offset
/// `window_start`: the end of the zip as an offset inside `window`.
fn find_eocd_end_in(window: &[u8], window_start: u64) -> Option<usize> {
    let rec_len = EOCD_LEN as usize;
    let last = window.len().checked_sub(rec_len)?;
    // Only zeros may follow the comment: the last non-zero byte bounds where it may end.
    let data_end = window.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (0..=last).rev().find_map(|at| {
        let rec = window.get(at..at + rec_len)?;
        if rec.get(..4)? != EOCD_SIGNATURE {
            return None;
        }
        let le = |o: usize, n: usize| {
            rec.get(o..o + n)?
                .iter()
                .rev()
                .try_fold(0u64, |acc, &b| Some(acc << 8 | u64::from(b)))
        };
        let end = at + rec_len + usize::try_from(le(20, 2)?).ok()?;
        if end > window.len() || end < data_end || window.len() - end > MAX_TRAILING_ZEROS as usize
        {
            return None;
        }
        // The central directory (offset at 16, size at 12) must end before the record,
        // unless the fields are zip64 placeholders.
        let (cd_size, cd_offset) = (le(12, 4)?, le(16, 4)?);
        let zip64 = cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff;
        if !zip64 && cd_size + cd_offset > window_start + at as u64 {
            return None;
        }
        Some(end)
    })
}

/// Limits on what [`Apk::extract_all`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total uncompressed bytes of all files.
    pub max_total_bytes: u64,
    /// Number of entries (files and directories) in the archive.
    pub max_entries: u64,
    /// Largest uncompressed/compressed ratio of one entry, checked for entries larger than
    /// [`ExtractLimits::ratio_min_size`].
    pub max_ratio: u64,
    /// Entries up to this uncompressed size are not ratio-checked (small files of repeated
    /// bytes legitimately compress very well).
    pub ratio_min_size: u64,
}

impl Default for ExtractLimits {
    /// 1 GiB in at most 65536 entries, ratio at most 256:1 above 1 MiB.
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 1 << 30,
            max_entries: 1 << 16,
            max_ratio: 256,
            ratio_min_size: 1 << 20,
        }
    }
}

/// What [`Apk::extract_all`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtractSummary {
    pub files: u64,
    pub dirs: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
}

/// An open APK (zip archive).
pub struct Apk<R: Read + Seek = File> {
    path: PathBuf,
    zip: ZipArchive<ByteRange<R>>,
    /// Where the zip ends in the reader (trailing padding excluded).
    end: u64,
}

impl<R: Read + Seek> std::fmt::Debug for Apk<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apk")
            .field("path", &self.path)
            .field("entries", &self.zip.len())
            .finish()
    }
}

impl Apk<File> {
    /// Opens the APK at `path`: a regular file, or a block device holding the APK followed by
    /// zero padding.
    pub fn open(path: &Path) -> Result<Apk<File>, ApkError> {
        let open_err = |source| ApkError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let ft = file.metadata().map_err(open_err)?.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(ApkError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Apk::from_reader(path, file)
    }
}

impl<R: Read + Seek> Apk<R> {
    /// Reads the zip in `reader`; `path` names it in errors. The zip may be followed by up to
    /// [`MAX_TRAILING_ZEROS`] zero bytes.
    pub fn from_reader(path: impl Into<PathBuf>, mut reader: R) -> Result<Apk<R>, ApkError> {
        let path = path.into();
        let io_err = |source| ApkError::Io {
            path: path.clone(),
            source,
        };
        let size = reader.seek(SeekFrom::End(0)).map_err(io_err)?;
        if size == 0 {
            return Err(ApkError::Empty { path });
        }
        let Some(end) = find_zip_end(&mut reader).map_err(io_err)? else {
            return Err(ApkError::NotAZip {
                path,
                reason: "no end of central directory record at its end".into(),
            });
        };
        match ZipArchive::new(ByteRange::new(reader, 0, end)) {
            // Two entries with one name could be read differently by different readers (the
            // zip crate keeps one); Android's libziparchive refuses such archives too.
            Ok(zip) if zip.has_duplicate_names() => Err(ApkError::NotAZip {
                path,
                reason: "two entries have the same name".into(),
            }),
            Ok(zip) => Ok(Apk { path, zip, end }),
            Err(ZipError::Io(source)) if source.kind() != io::ErrorKind::UnexpectedEof => {
                Err(ApkError::Io { path, source })
            }
            Err(e) => Err(ApkError::NotAZip {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// The path given when opening (used in errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries in the archive.
    pub fn len(&self) -> usize {
        self.zip.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.zip.is_empty()
    }

    /// Length of the zip archive (without trailing padding).
    pub fn zip_len(&self) -> u64 {
        self.end
    }

    /// Reads the entry `name` (its full path inside the zip, e.g. `assets/vm_config.json`),
    /// which must be a file of at most `max_bytes` uncompressed bytes. Both the size the
    /// archive declares and the bytes actually decompressed are held to `max_bytes`, and the
    /// CRC is checked.
    pub fn read_entry(&mut self, name: &str, max_bytes: u64) -> Result<Vec<u8>, ApkError> {
        let Some(index) = self.zip.index_for_name(name) else {
            return Err(if self.is_implicit_dir(name) {
                self.entry_err(name, |apk, entry| ApkError::IsDirectory { apk, entry })
            } else {
                self.entry_err(name, |apk, entry| ApkError::NoEntry { apk, entry })
            });
        };
        let apk = self.path.clone();
        let mut file = self
            .zip
            .by_index(index)
            .map_err(|e| zip_err(&apk, name, e))?;
        check_entry(&apk, name, &file)?;
        if file.is_dir() {
            return Err(ApkError::IsDirectory {
                apk,
                entry: name.into(),
            });
        }
        let too_large = |size| ApkError::TooLarge {
            apk: apk.clone(),
            entry: name.into(),
            size,
            max: max_bytes,
        };
        if file.size() > max_bytes {
            return Err(too_large(file.size()));
        }
        let mut data = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
        (&mut file)
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| zip_err(&apk, name, ZipError::Io(e)))?;
        if data.len() as u64 > max_bytes {
            return Err(too_large(data.len() as u64));
        }
        Ok(data)
    }

    /// Whether `name` is a directory with no entry of its own: entries exist under `name/`.
    fn is_implicit_dir(&self, name: &str) -> bool {
        let prefix = format!("{}/", name.trim_end_matches('/'));
        self.zip
            .file_names()
            .any(|n| n.is_ok_and(|n| n.starts_with(&prefix)))
    }

    fn entry_err(&self, name: &str, f: impl FnOnce(PathBuf, String) -> ApkError) -> ApkError {
        f(self.path.clone(), name.into())
    }

    /// Extracts every entry into `dest`, which must be an existing empty directory.
    ///
    /// - Names that are absolute, contain `..`, a backslash or NUL, or would land outside
    ///   `dest` are refused (zip slip).
    /// - Symbolic links are refused: APKs never contain them, and a link is the classic way
    ///   to make a later entry escape the destination.
    /// - Files get their Unix permission bits from the archive (0644 when it has none),
    ///   directories likewise (0755); setuid, setgid and sticky bits are dropped. Directory
    ///   modes are applied at the end, so a read-only directory still receives its files.
    /// - Files are created with `O_EXCL`: nothing existing is overwritten (a duplicate entry
    ///   is an error).
    /// - `limits` bound the entry count, the total bytes and the compression ratio; an entry
    ///   that decompresses to more than it declares is an error. Memory use is constant.
    ///
    /// On error, what was written so far is left in `dest` for the caller to remove.
    pub fn extract_all(
        &mut self,
        dest: &Path,
        limits: &ExtractLimits,
    ) -> Result<ExtractSummary, ApkError> {
        check_destination(dest)?;
        let apk = self.path.clone();
        let count = self.zip.len() as u64;
        if count > limits.max_entries {
            return Err(ApkError::Limit {
                apk,
                what: format!("{count} entries"),
                limit: limits.max_entries,
            });
        }
        let mut summary = ExtractSummary::default();
        // Directory modes, applied once everything is written.
        let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
        for index in 0..self.zip.len() {
            let mut file = self
                .zip
                .by_index(index)
                .map_err(|e| zip_err(&apk, &format!("#{index}"), e))?;
            let name = String::from_utf8_lossy(file.name_raw()).into_owned();
            let rel = safe_relative_path(&apk, &name, file.enclosed_name())?;
            check_entry(&apk, &name, &file)?;
            let mode = file.unix_mode();
            let kind = mode.map_or(0, |m| m & S_IFMT);
            if kind == S_IFLNK {
                return Err(ApkError::UnsafeEntry {
                    apk,
                    entry: name,
                    reason: "symbolic links are not extracted",
                });
            }
            if ![0, S_IFREG, S_IFDIR].contains(&kind) {
                return Err(ApkError::UnsafeEntry {
                    apk,
                    entry: name,
                    reason: "only files and directories are extracted (a device, FIFO or socket)",
                });
            }
            let is_dir = file.is_dir() || kind == S_IFDIR;
            let target = dest.join(&rel);
            let write_err = |path: &Path, source| ApkError::Write {
                apk: apk.clone(),
                path: path.to_path_buf(),
                source,
            };
            if is_dir {
                create_dirs(dest, &rel, &apk)?;
                dir_modes.push((target, mode.map_or(0o755, |m| m & 0o777)));
                summary.dirs += 1;
                continue;
            }
            let size = file.size();
            let compressed = file.compressed_size();
            let total = summary.bytes.saturating_add(size);
            if total > limits.max_total_bytes {
                return Err(ApkError::Limit {
                    apk,
                    what: format!("{total} bytes of files (at {name:?})"),
                    limit: limits.max_total_bytes,
                });
            }
            if size > limits.ratio_min_size && size / compressed.max(1) > limits.max_ratio {
                return Err(ApkError::ZipBomb {
                    apk,
                    entry: name,
                    size,
                    compressed,
                    max_ratio: limits.max_ratio,
                });
            }
            if let Some(parent) = rel.parent() {
                create_dirs(dest, parent, &apk)?;
            }
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&target)
                .map_err(|e| write_err(&target, e))?;
            let copied = copy_entry(&mut file, size, &mut out).map_err(|e| match e {
                CopyError::Read(e) => zip_err(&apk, &name, ZipError::Io(e)),
                CopyError::Write(e) => write_err(&target, e),
            })?;
            if copied != size {
                return Err(ApkError::Corrupt {
                    apk,
                    entry: name,
                    reason: if copied > size {
                        format!("declares {size} bytes but holds more")
                    } else {
                        format!("declares {size} bytes but holds {copied}")
                    },
                });
            }
            out.flush().map_err(|e| write_err(&target, e))?;
            out.set_permissions(fs::Permissions::from_mode(
                mode.map_or(0o644, |m| m & 0o777),
            ))
            .map_err(|e| write_err(&target, e))?;
            summary.files += 1;
            summary.bytes = total;
        }
        // Deepest first, so a read-only parent does not stop its children being set.
        dir_modes.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (dir, mode) in dir_modes {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|source| {
                ApkError::Write {
                    apk: apk.clone(),
                    path: dir,
                    source,
                }
            })?;
        }
        Ok(summary)
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies an entry's data to `out`, reading at most `size + 1` bytes (one more than it
/// declares, to notice a lie). Returns the bytes read.
fn copy_entry(entry: &mut impl Read, size: u64, out: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut limited = entry.take(size.saturating_add(1));
    let mut copied = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        copied += n as u64;
        if copied > size {
            return Ok(copied);
        }
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(CopyError::Write)?;
    }
}

/// Refuses encrypted entries and compression methods other than stored and deflate.
fn check_entry<R: Read>(
    apk: &Path,
    name: &str,
    file: &zip::read::ZipFile<'_, R>,
) -> Result<(), ApkError> {
    let unsupported = |reason: String| ApkError::Unsupported {
        apk: apk.to_path_buf(),
        entry: name.into(),
        reason,
    };
    if file.encrypted() {
        return Err(unsupported("the entry is encrypted".into()));
    }
    match file.compression() {
        CompressionMethod::Stored | CompressionMethod::Deflated => Ok(()),
        other => Err(unsupported(format!("compression method {other}"))),
    }
}

/// Maps a zip error about entry `name` to an [`ApkError`].
fn zip_err(apk: &Path, name: &str, e: ZipError) -> ApkError {
    let apk = apk.to_path_buf();
    let entry = name.to_string();
    match e {
        ZipError::FileNotFound => ApkError::NoEntry { apk, entry },
        ZipError::UnsupportedArchive(reason) => ApkError::Unsupported {
            apk,
            entry,
            reason: reason.into(),
        },
        ZipError::CompressionMethodNotSupported(m) => ApkError::Unsupported {
            apk,
            entry,
            reason: format!("compression method {m}"),
        },
        ZipError::Io(source)
            if !matches!(
                source.kind(),
                io::ErrorKind::InvalidData
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::UnexpectedEof
            ) =>
        {
            ApkError::Io { path: apk, source }
        }
        other => ApkError::Corrupt {
            apk,
            entry,
            reason: other.to_string(),
        },
    }
}

/// The relative path an entry extracts to, refusing anything that could leave the
/// destination. `enclosed` is the zip crate's own check (`None` when it refuses the name).
fn safe_relative_path(
    apk: &Path,
    name: &str,
    enclosed: Option<PathBuf>,
) -> Result<PathBuf, ApkError> {
    let refuse = |reason| ApkError::UnsafeEntry {
        apk: apk.to_path_buf(),
        entry: name.into(),
        reason,
    };
    if name.is_empty() {
        return Err(refuse("empty name"));
    }
    if name.contains('\0') {
        return Err(refuse("NUL in the name"));
    }
    if name.contains('\\') {
        return Err(refuse("backslash in the name"));
    }
    if name.starts_with('/') {
        return Err(refuse("absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(refuse("'..' in the path"));
    }
    let Some(rel) = enclosed else {
        return Err(refuse("the path leaves the destination"));
    };
    if rel.as_os_str().is_empty() {
        return Err(refuse("the path names the destination itself"));
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse("the path leaves the destination"));
    }
    Ok(rel)
}

/// `dest` must be an existing, empty, real directory (not a symlink).
fn check_destination(dest: &Path) -> Result<(), ApkError> {
    let bad = |reason: String| ApkError::Destination {
        path: dest.to_path_buf(),
        reason,
    };
    let meta = fs::symlink_metadata(dest).map_err(|e| bad(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(bad("not a directory".into()));
    }
    let mut entries = fs::read_dir(dest).map_err(|e| bad(e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad("not empty".into()));
    }
    Ok(())
}

/// Creates `dest/rel` and any missing parents (mode 0700 until the final modes are set),
/// refusing to go through anything that is not a real directory.
fn create_dirs(dest: &Path, rel: &Path, apk: &Path) -> Result<(), ApkError> {
    let mut at = dest.to_path_buf();
    for c in rel.components() {
        at.push(c);
        let err = |source| ApkError::Write {
            apk: apk.to_path_buf(),
            path: at.clone(),
            source,
        };
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o700).create(&at).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;
    use crate::payload::testutil::{RawEntry, TempDir, deflate_zeros, raw_zip, zip_of};

    fn apk_of(bytes: Vec<u8>) -> Apk<Cursor<Vec<u8>>> {
        Apk::from_reader("test.apk", Cursor::new(bytes)).unwrap()
    }

    fn open_err(bytes: Vec<u8>) -> ApkError {
        Apk::from_reader("test.apk", Cursor::new(bytes)).unwrap_err()
    }

    /// A deflated entry of `len` zeros whose headers declare `declared` bytes.
    fn zeros_entry(name: &str, len: u64, declared: u32) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            method: 8,
            crc: 0,
            data: deflate_zeros(len),
            size: declared,
            mode: 0o100644,
        }
    }

    #[test]
    fn open_bad_files() {
        let dir = TempDir::new("apk-open");
        let e = Apk::open(&dir.path().join("missing.apk")).unwrap_err();
        assert!(
            matches!(&e, ApkError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
        assert!(e.to_string().contains("missing.apk"), "{e}");
        let e = Apk::open(dir.path()).unwrap_err();
        assert!(matches!(e, ApkError::NotAFile { .. }), "{e}");
        let e = Apk::open(&dir.file("empty.apk", b"")).unwrap_err();
        assert!(matches!(e, ApkError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("empty.apk"), "{e}");
        let e = Apk::open(&dir.file("text.apk", b"this is not a zip\n")).unwrap_err();
        assert!(matches!(e, ApkError::NotAZip { .. }), "{e}");
        let good = zip_of(&[("a.txt", b"hello")]);
        let apk = Apk::open(&dir.file("good.apk", &good)).unwrap();
        assert_eq!(apk.len(), 1);
        assert_eq!(apk.zip_len(), good.len() as u64);
    }

    #[test]
    fn truncated_zips_are_refused() {
        let good = zip_of(&[("a.txt", &[7u8; 5000]), ("b.txt", b"bye")]);
        // Cut inside the end record, inside the central directory, inside the data.
        for cut in [5, 30, 100, good.len() / 2, good.len() - 1] {
            let e = open_err(good[..good.len() - cut].to_vec());
            assert!(matches!(e, ApkError::NotAZip { .. }), "cut {cut}: {e}");
        }
        // Only the end record left: a central directory that is not there.
        let e = open_err(good[good.len() - 22..].to_vec());
        assert!(matches!(e, ApkError::NotAZip { .. }), "{e}");
    }

    #[test]
    fn zip_followed_by_padding() {
        let good = zip_of(&[("assets/vm_config.json", b"{}")]);
        for pad in [0, 1, 4095] {
            let mut padded = good.clone();
            padded.resize(good.len() + pad, 0);
            let mut apk = apk_of(padded);
            assert_eq!(apk.zip_len(), good.len() as u64, "pad {pad}");
            assert_eq!(apk.read_entry("assets/vm_config.json", 100).unwrap(), b"{}");
        }
        // More than a partition's worth of padding, or non-zero bytes after it, is not an APK.
        let mut padded = good.clone();
        padded.resize(good.len() + 4096, 0);
        assert!(matches!(open_err(padded), ApkError::NotAZip { .. }));
        let mut junk = good.clone();
        junk.extend_from_slice(&[0, 0, 1, 0]);
        assert!(matches!(open_err(junk), ApkError::NotAZip { .. }));
    }

    #[test]
    fn find_zip_end_with_a_comment_and_a_fake_record() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        // The comment holds something that looks like an end record; the real one is earlier.
        // Its central directory would end past it, so it is skipped.
        let mut comment = b"PK\x05\x06".to_vec();
        comment.extend_from_slice(&[0; 8]);
        comment.extend_from_slice(&[0x7f; 8]);
        comment.extend_from_slice(&[0; 2]);
        w.set_comment(String::from_utf8(comment).unwrap()).unwrap();
        w.start_file("x", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"data").unwrap();
        let good = w.finish().unwrap().into_inner();
        let mut padded = good.clone();
        padded.resize(good.len() + 100, 0);
        assert_eq!(
            find_zip_end(&mut Cursor::new(&padded)).unwrap(),
            Some(good.len() as u64)
        );
        assert_eq!(apk_of(padded).read_entry("x", 10).unwrap(), b"data");
        // A record whose comment runs past the end of the data is not the end.
        let mut bad = good[..good.len() - 22 - 22].to_vec();
        bad.extend_from_slice(&good[good.len() - 22 - 22..good.len() - 2]);
        assert_eq!(find_zip_end(&mut Cursor::new(&bad)).unwrap(), None);
        assert_eq!(find_zip_end(&mut Cursor::new(&[] as &[u8])).unwrap(), None);
    }

    #[test]
    fn byte_range_reads_and_seeks_inside_the_range() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = ByteRange::new(Cursor::new(data), 10, 20);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, (10..30u8).collect::<Vec<_>>());
        assert_eq!(r.seek(SeekFrom::End(-5)).unwrap(), 15);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(two, [25, 26]);
        assert_eq!(r.seek(SeekFrom::Current(-1)).unwrap(), 16);
        assert!(r.seek(SeekFrom::Current(-17)).is_err());
        r.seek(SeekFrom::Start(50)).unwrap();
        assert_eq!(r.read(&mut two).unwrap(), 0);
    }

    #[test]
    fn read_entry_errors_name_the_apk_and_entry() {
        let mut apk = apk_of(zip_of(&[
            ("assets/vm_config.json", b"{\"task\":{}}"),
            ("lib/x86_64/libpayload.so", &[1u8; 3000]),
        ]));
        assert_eq!(
            apk.read_entry("assets/vm_config.json", 11).unwrap().len(),
            11
        );
        let e = apk.read_entry("assets/missing.json", 100).unwrap_err();
        assert!(matches!(e, ApkError::NoEntry { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("test.apk") && text.contains("assets/missing.json"),
            "{text}"
        );
        // A directory with no entry of its own, with or without a slash.
        for name in ["assets", "assets/", "lib/x86_64"] {
            let e = apk.read_entry(name, 100).unwrap_err();
            assert!(matches!(e, ApkError::IsDirectory { .. }), "{name}: {e}");
        }
        let e = apk
            .read_entry("lib/x86_64/libpayload.so", 2999)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ApkError::TooLarge {
                    size: 3000,
                    max: 2999,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("libpayload.so"), "{e}");
    }

    #[test]
    fn read_entry_explicit_directory() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_directory("assets/", zip::write::SimpleFileOptions::default())
            .unwrap();
        let mut apk = apk_of(w.finish().unwrap().into_inner());
        for name in ["assets", "assets/"] {
            let e = apk.read_entry(name, 100).unwrap_err();
            assert!(matches!(e, ApkError::IsDirectory { .. }), "{name}: {e}");
        }
    }

    #[test]
    fn read_entry_lying_header_is_capped() {
        // Declares 10 bytes, inflates to 1 MiB: the zip reader stops at the declared size.
        let mut apk = apk_of(raw_zip(&[zeros_entry("bomb", 1 << 20, 10)]));
        let e = apk.read_entry("bomb", 1000).unwrap_err();
        assert!(matches!(e, ApkError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("bomb"), "{e}");
    }

    #[test]
    fn read_entry_unsupported_and_corrupt() {
        let mut bzip2 = RawEntry::stored("bz", b"BZh91AY&SY");
        bzip2.method = 12;
        let mut bad_crc = RawEntry::stored("crc", b"hello");
        bad_crc.crc ^= 1;
        let mut garbage = RawEntry::stored("garbage", &[0xff; 64]);
        garbage.method = 8;
        garbage.size = 1000;
        let mut apk = apk_of(raw_zip(&[bzip2, bad_crc, garbage]));
        let e = apk.read_entry("bz", 100).unwrap_err();
        assert!(matches!(e, ApkError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("\"bz\""), "{e}");
        let e = apk.read_entry("crc", 100).unwrap_err();
        assert!(matches!(e, ApkError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("\"crc\""), "{e}");
        let e = apk.read_entry("garbage", 1000).unwrap_err();
        assert!(matches!(e, ApkError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn deflate_zeros_is_valid_deflate() {
        let len = 100_000u64;
        let mut entry = zeros_entry("z", len, len as u32);
        entry.crc = crc32fast::hash(&vec![0u8; len as usize]);
        let mut apk = apk_of(raw_zip(&[entry]));
        assert_eq!(apk.read_entry("z", len).unwrap(), vec![0u8; len as usize]);
    }

    fn modes_zip() -> Vec<u8> {
        let opts = zip::write::SimpleFileOptions::default();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_directory("bin/", opts.unix_permissions(0o555))
            .unwrap();
        w.start_file("bin/tool", opts.unix_permissions(0o4755))
            .unwrap();
        w.write_all(b"#!/bin/sh\n").unwrap();
        w.start_file("assets/deep/config.json", opts).unwrap();
        w.write_all(b"{}").unwrap();
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn extract_all_writes_files_dirs_and_modes() {
        let dir = TempDir::new("apk-extract");
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let summary = apk_of(modes_zip())
            .extract_all(&dest, &ExtractLimits::default())
            .unwrap();
        assert_eq!(
            summary,
            ExtractSummary {
                files: 2,
                dirs: 1,
                bytes: 12
            }
        );
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin"), 0o555);
        assert_eq!(mode("bin/tool"), 0o755, "setuid dropped");
        assert_eq!(mode("assets/deep/config.json"), 0o644);
        assert_eq!(fs::read(dest.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        // Let TempDir remove it.
        fs::set_permissions(dest.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
        // Extracting again into the now non-empty directory is refused.
        let e = apk_of(modes_zip())
            .extract_all(&dest, &ExtractLimits::default())
            .unwrap_err();
        assert!(matches!(e, ApkError::Destination { .. }), "{e}");
    }

    /// Extracts `zip` into a fresh directory and returns the error.
    fn extract_err(zip: Vec<u8>, limits: &ExtractLimits) -> (ApkError, TempDir) {
        let dir = TempDir::new("apk-bad");
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let e = apk_of(zip).extract_all(&dest, limits).unwrap_err();
        (e, dir)
    }

    #[test]
    fn extract_refuses_names_leaving_the_destination() {
        for name in [
            "../evil",
            "a/../../evil",
            "a/../b",
            "/etc/evil",
            "a\\..\\..\\evil",
            "nul\0name",
            "",
        ] {
            let zip = raw_zip(&[RawEntry::stored("ok", b"1"), RawEntry::stored(name, b"x")]);
            let (e, dir) = extract_err(zip, &ExtractLimits::default());
            assert!(matches!(e, ApkError::UnsafeEntry { .. }), "{name:?}: {e}");
            assert!(!dir.path().join("evil").exists());
            assert!(!Path::new("/etc/evil").exists());
        }
    }

    #[test]
    fn extract_refuses_symlinks_and_devices() {
        let mut link = RawEntry::stored("link", b"/etc/passwd");
        link.mode = 0o120777;
        let (e, dir) = extract_err(raw_zip(&[link]), &ExtractLimits::default());
        assert!(matches!(e, ApkError::UnsafeEntry { .. }), "{e}");
        assert!(fs::symlink_metadata(dir.path().join("out/link")).is_err());
        let mut fifo = RawEntry::stored("fifo", b"");
        fifo.mode = 0o010644;
        let (e, _dir) = extract_err(raw_zip(&[fifo]), &ExtractLimits::default());
        assert!(matches!(e, ApkError::UnsafeEntry { .. }), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let zip = raw_zip(&[RawEntry::stored("a", b"1"), RawEntry::stored("a", b"2")]);
        let e = open_err(zip);
        assert!(matches!(e, ApkError::NotAZip { .. }), "{e}");
        assert!(e.to_string().contains("same name"), "{e}");
    }

    #[test]
    fn extract_never_overwrites() {
        // "a/" and "a" are different names; the second cannot be created.
        let zip = raw_zip(&[RawEntry::stored("a/", b""), RawEntry::stored("a", b"2")]);
        let (e, _dir) = extract_err(zip, &ExtractLimits::default());
        assert!(
            matches!(&e, ApkError::Write { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e}"
        );
        // A file where a directory is needed.
        let zip = raw_zip(&[RawEntry::stored("a", b"1"), RawEntry::stored("a/b", b"2")]);
        let (e, _dir) = extract_err(zip, &ExtractLimits::default());
        assert!(matches!(e, ApkError::Write { .. }), "{e}");
    }

    #[test]
    fn extract_zip_bomb_stops_early() {
        const GIB: u64 = 1 << 30;
        // 1 GiB of zeros in about 6.5 MiB of deflate, declared honestly.
        let bomb = raw_zip(&[zeros_entry("zeros", GIB, GIB as u32)]);
        let limits = ExtractLimits {
            max_total_bytes: 100 << 20,
            ..ExtractLimits::default()
        };
        let start = Instant::now();
        let (e, dir) = extract_err(bomb.clone(), &limits);
        assert!(
            matches!(e, ApkError::Limit { limit, .. } if limit == 100 << 20),
            "{e}"
        );
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        assert!(!dir.path().join("out/zeros").exists());
        // With room for it, the ratio check refuses it before writing.
        let limits = ExtractLimits {
            max_total_bytes: 2 * GIB,
            max_ratio: 100,
            ..ExtractLimits::default()
        };
        let (e, _dir) = extract_err(bomb, &limits);
        assert!(matches!(e, ApkError::ZipBomb { size: GIB, .. }), "{e}");
        // Declared small, inflates large: stops after the declared size.
        let liar = raw_zip(&[zeros_entry("liar", GIB, 4096)]);
        let start = Instant::now();
        let (e, dir) = extract_err(liar, &ExtractLimits::default());
        assert!(matches!(e, ApkError::Corrupt { .. }), "{e}");
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        let written = fs::metadata(dir.path().join("out/liar")).map_or(0, |m| m.len());
        assert!(written <= 4096, "{written}");
    }

    #[test]
    fn extract_entry_count_limit() {
        let entries: Vec<RawEntry> = (0..5)
            .map(|i| RawEntry::stored(&format!("f{i}"), b""))
            .collect();
        let limits = ExtractLimits {
            max_entries: 4,
            ..ExtractLimits::default()
        };
        let (e, _dir) = extract_err(raw_zip(&entries), &limits);
        assert!(matches!(e, ApkError::Limit { limit: 4, .. }), "{e}");
    }
}
