//! A raw host file: positional reads and writes, an OFD lock, dirty tracking for flush.
//!
//! [`RawFile`] is one host file (a whole raw disk, or one component of a composite);
//! [`RawDisk`] serves a raw image as a disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{DiskBackend, DiskError, FORMAT_MAGIC_LEN, SECTOR_SIZE, check_range, id_from_name};

/// One open host file. Reads and writes are positional (`pread`/`pwrite`), so it can be shared
/// between threads without a lock.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    writable: bool,
    /// Size when opened (regular file length, or block device size).
    size: u64,
    /// Device and inode, to recognise the same file under another name.
    dev_ino: (u64, u64),
    is_block_device: bool,
    /// Written since the last sync.
    dirty: AtomicBool,
    /// How many times it was synced (for tests and diagnostics).
    syncs: AtomicU64,
}

impl RawFile {
    /// Opens `path` read-write or read-only, and (if `lock`) takes an OFD lock on the whole
    /// file: a write lock when read-write, a read lock otherwise. The file must be a regular
    /// file or a block device and must exist. It is opened with `O_NONBLOCK` (cleared once the
    /// type is checked), so a FIFO named by a descriptor is refused instead of hanging.
    pub fn open(path: &Path, writable: bool, lock: bool) -> Result<RawFile, DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(DiskError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        crate::fsutil::clear_nonblocking(&file).map_err(open_err)?;
        if lock {
            lock_file(&file, path, writable)?;
        }
        // Works for block devices too, whose metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            writable,
            size,
            dev_ino: (meta.dev(), meta.ino()),
            is_block_device: ft.is_block_device(),
            dirty: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
        })
    }

    /// Takes the OFD lock `open(.., lock: true)` would have taken.
    pub fn lock(&self) -> Result<(), DiskError> {
        lock_file(&self.file, &self.path, self.writable)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Size in bytes when the file was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn dev_ino(&self) -> (u64, u64) {
        self.dev_ino
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    /// The first bytes of the file (fewer if the file is shorter), for format detection.
    pub fn head(&self) -> Result<Vec<u8>, DiskError> {
        let n = self.size.min(FORMAT_MAGIC_LEN as u64) as usize;
        let mut buf = vec![0u8; n];
        self.read_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Reads exactly `buf.len()` bytes at `offset`. `read_exact_at` retries short reads and
    /// EINTR; end of file before the buffer is full is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| self.io_err("read", offset, source))
    }

    /// Writes all of `buf` at `offset` (`write_all_at` retries short writes and EINTR).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        if !self.writable {
            return Err(DiskError::ReadOnly {
                offset,
                what: format!("{:?}", self.path),
            });
        }
        // Marked before writing: a failed write may still have changed the file.
        self.dirty.store(true, Ordering::Release);
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| self.io_err("write", offset, source))
    }

    /// fdatasync if the file was written since the last sync.
    pub fn sync_if_dirty(&self) -> Result<(), DiskError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(source) = self.file.sync_data() {
                self.dirty.store(true, Ordering::Release);
                return Err(self.io_err("fdatasync", 0, source));
            }
        }
        Ok(())
    }

    /// How many times [`RawFile::sync_if_dirty`] synced the file.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn io_err(&self, op: &'static str, offset: u64, source: io::Error) -> DiskError {
        let source = if source.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ended early (it is {} bytes now; was it truncated?)",
                    self.file.metadata().map(|m| m.len()).unwrap_or(0)
                ),
            )
        } else {
            source
        };
        DiskError::Io {
            op,
            path: self.path.clone(),
            offset,
            source,
        }
    }
}

/// Takes an OFD (open file description) lock on the whole file, without waiting. OFD locks
/// belong to this open file, not to the process: they conflict with locks taken through any
/// other `open` of the same file, even in this process, and go away when it is closed.
pub(crate) fn lock_file(file: &File, path: &Path, write: bool) -> Result<(), DiskError> {
    let fl = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however long it gets
        l_pid: 0, // must be 0 for OFD locks
    };
    // SAFETY: `file` is an open descriptor for the duration of the call; `fl` is a valid,
    // initialised `struct flock` that the kernel only reads for F_OFD_SETLK.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(DiskError::Locked {
            path: path.to_path_buf(),
        }),
        // A file system without lock support (some network or FUSE file systems): the disk
        // still works, without the protection.
        Some(libc::ENOLCK) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
            log::warn!("cannot lock disk file {path:?} ({err}); continuing without a lock");
            Ok(())
        }
        _ => Err(DiskError::Lock {
            path: path.to_path_buf(),
            source: err,
        }),
    }
}

/// A raw image served as a whole disk.
#[derive(Debug)]
pub struct RawDisk {
    file: RawFile,
    /// The file size rounded down to a whole sector.
    len: u64,
    id: [u8; 20],
}

impl RawDisk {
    /// A raw disk over `file`. A size that is not a multiple of 512 is an error for a
    /// writable image; for a read-only one the partial last sector is left out (warning).
    pub fn new(file: RawFile) -> Result<RawDisk, DiskError> {
        let size = file.size();
        let tail = size % SECTOR_SIZE;
        if tail != 0 {
            if file.is_writable() {
                return Err(DiskError::UnalignedImage {
                    path: file.path().to_path_buf(),
                    size,
                });
            }
            log::warn!(
                "disk image {:?} is {size} bytes, not a multiple of 512: the guest does not see \
                 its last {tail} bytes",
                file.path()
            );
        }
        let name = file
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(RawDisk {
            len: size - tail,
            id: id_from_name(&name),
            file,
        })
    }

    pub fn file(&self) -> &RawFile {
        &self.file
    }
}

impl DiskBackend for RawDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn is_writable(&self) -> bool {
        self.file.is_writable()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.len)?;
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.len)?;
        if !self.file.is_writable() {
            return Err(DiskError::ReadOnly {
                offset,
                what: format!("disk {:?}", self.file.path()),
            });
        }
        self.file.write_at(buf, offset)
    }

    fn flush(&self) -> Result<(), DiskError> {
        self.file.sync_if_dirty()
    }

    fn id(&self) -> [u8; 20] {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::{TempDir, pattern};

    #[test]
    fn reads_and_writes_in_place() {
        let dir = TempDir::new("raw-rw");
        let p = dir.file("disk.img", &pattern(8192, 1));
        let d = RawDisk::new(RawFile::open(&p, true, true).unwrap()).unwrap();
        assert_eq!(d.len(), 8192);
        assert!(d.is_writable());
        assert_eq!(&d.id()[..9], b"disk.img\0");
        let mut b = vec![0u8; 1024];
        d.read_exact_at(&mut b, 512).unwrap();
        assert_eq!(b, pattern(8192, 1)[512..1536]);
        d.write_all_at(&[0x55; 512], 4096).unwrap();
        d.flush().unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[4096..4608], &[0x55; 512]);
        assert_eq!(on_disk.len(), 8192);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let dir = TempDir::new("raw-range");
        let p = dir.file("disk.img", &[0u8; 1024]);
        let d = RawDisk::new(RawFile::open(&p, true, true).unwrap()).unwrap();
        let mut b = [0u8; 512];
        assert!(matches!(
            d.read_exact_at(&mut b, 1024),
            Err(DiskError::OutOfRange {
                offset: 1024,
                len: 512,
                disk_len: 1024
            })
        ));
        assert!(d.read_exact_at(&mut b, u64::MAX - 10).is_err());
        assert!(d.write_all_at(&b, 513).is_err());
        // Nothing was appended.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024);
    }

    #[test]
    fn read_only_rejects_writes() {
        let dir = TempDir::new("raw-ro");
        let p = dir.file("disk.img", &[3u8; 1024]);
        let d = RawDisk::new(RawFile::open(&p, false, true).unwrap()).unwrap();
        assert!(!d.is_writable());
        let e = d.write_all_at(&[0u8; 512], 0).unwrap_err();
        assert!(matches!(e, DiskError::ReadOnly { offset: 0, .. }), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), vec![3u8; 1024]);
        // Flushing a read-only disk succeeds.
        d.flush().unwrap();
    }

    #[test]
    fn unaligned_size() {
        let dir = TempDir::new("raw-unaligned");
        let p = dir.file("disk.img", &pattern(1000, 2));
        // Read-only: the partial sector is invisible.
        let d = RawDisk::new(RawFile::open(&p, false, true).unwrap()).unwrap();
        assert_eq!(d.len(), 512);
        let mut b = [0u8; 512];
        assert!(d.read_exact_at(&mut b, 512).is_err());
        drop(d);
        // Writable: refused.
        let e = RawDisk::new(RawFile::open(&p, true, true).unwrap()).unwrap_err();
        assert!(
            matches!(e, DiskError::UnalignedImage { size: 1000, .. }),
            "{e}"
        );
    }

    #[test]
    fn short_host_read_is_an_error() {
        let dir = TempDir::new("raw-short");
        let p = dir.file("disk.img", &[1u8; 4096]);
        let d = RawDisk::new(RawFile::open(&p, false, true).unwrap()).unwrap();
        // Someone truncates the file under us: the size stays fixed, reads fail.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1024)
            .unwrap();
        let mut b = [0u8; 1024];
        d.read_exact_at(&mut b, 0).unwrap();
        let e = d.read_exact_at(&mut b, 2048).unwrap_err();
        assert!(e.to_string().contains("ended early"), "{e}");
        assert!(e.to_string().contains("offset 2048"), "{e}");
    }

    #[test]
    fn locks() {
        let dir = TempDir::new("raw-lock");
        let p = dir.file("disk.img", &[0u8; 4096]);
        let w = RawFile::open(&p, true, true).unwrap();
        // A second writer and a reader are both refused while the write lock is held.
        let e = RawFile::open(&p, true, true).unwrap_err();
        assert!(matches!(e, DiskError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("disk.img"));
        assert!(matches!(
            RawFile::open(&p, false, true),
            Err(DiskError::Locked { .. })
        ));
        // Without a lock (inspect) it opens.
        RawFile::open(&p, false, false).unwrap();
        drop(w);
        // Readers share.
        let r1 = RawFile::open(&p, false, true).unwrap();
        let _r2 = RawFile::open(&p, false, true).unwrap();
        assert!(matches!(
            RawFile::open(&p, true, true),
            Err(DiskError::Locked { .. })
        ));
        drop(r1);
    }

    #[test]
    fn rejects_directories() {
        let dir = TempDir::new("raw-dir");
        assert!(matches!(
            RawFile::open(dir.path(), false, true),
            Err(DiskError::NotAFile { .. })
        ));
    }

    #[test]
    fn flush_syncs_only_when_dirty() {
        let dir = TempDir::new("raw-flush");
        let p = dir.file("disk.img", &[0u8; 4096]);
        let d = RawDisk::new(RawFile::open(&p, true, true).unwrap()).unwrap();
        d.flush().unwrap();
        assert_eq!(d.file().sync_count(), 0);
        d.write_all_at(&[1u8; 512], 0).unwrap();
        d.flush().unwrap();
        d.flush().unwrap();
        assert_eq!(d.file().sync_count(), 1);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = TempDir::new("raw-fifo");
        let fifo = dir.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo failed");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = RawFile::open(&fifo, false, false).map(|_| ());
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO hung");
        assert!(matches!(r, Err(DiskError::NotAFile { .. })), "{r:?}");
    }
}
