//! VM directories: create, delete, list, status, set-config, export and import.
//!
//! Every directory appears and disappears in one step: it is built under a temporary name in
//! the same parent (`.partial-<64 hex digits>`, longer than any VM name, so it is never
//! listed) and moved into place with `renameat2(RENAME_NOREPLACE)`, which fails when the name
//! is taken. A failure on the way removes the temporary directory.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::payload::partition::{self, DEFAULT_INSTANCE_SIZE, InstanceId, PartitionType};

use super::config::VmAppConfig;
use super::home::{self, Home, VmDir};
use super::lock::{self, RunLock};
use super::reason::LastStop;
use super::{ManagerError, name};

/// Android's `VirtualMachine.STATUS_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Stopped,
    Running,
    Deleted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Stopped => "stopped",
            Status::Running => "running",
            Status::Deleted => "deleted",
        }
    }
}

/// Files a VM directory always has after create or import (beside `storage.img`).
const PERSISTENT: [&str; 3] = [home::CONFIG, home::INSTANCE_ID, home::INSTANCE_IMG];

/// A step of populating a new VM directory, for tests that inject failures.
pub type StepHook<'a> = &'a mut dyn FnMut(&str) -> Result<(), ManagerError>;

/// `vm create NAME --config FILE`.
pub fn create(home: &Home, vm_name: &str, config_file: &Path) -> Result<VmDir, ManagerError> {
    let config = VmAppConfig::load(config_file)?;
    config.check_files(config_file)?;
    create_with(home, vm_name, &config, &mut |_| Ok(()))
}

/// Creates the VM directory for `config`, calling `step` after each file is written.
pub fn create_with(
    home: &Home,
    vm_name: &str,
    config: &VmAppConfig,
    step: StepHook<'_>,
) -> Result<VmDir, ManagerError> {
    let vm = home.vm(vm_name)?;
    build_dir_atomically(&home.vms(), vm.path(), vm_name, |tmp| {
        write_new_file(&tmp.join(home::CONFIG), &config.to_json())?;
        step(home::CONFIG)?;
        partition::create_partition(
            &tmp.join(home::INSTANCE_IMG),
            DEFAULT_INSTANCE_SIZE,
            PartitionType::Instance,
        )?;
        step(home::INSTANCE_IMG)?;
        let id = InstanceId::random()?;
        write_new_file(&tmp.join(home::INSTANCE_ID), id.as_bytes())?;
        step(home::INSTANCE_ID)?;
        if config.encrypted_storage_bytes > 0 {
            partition::create_partition(
                &tmp.join(home::STORAGE_IMG),
                config.encrypted_storage_bytes,
                PartitionType::EncryptedStore,
            )?;
            step(home::STORAGE_IMG)?;
        }
        Ok(())
    })?;
    clear_tombstone(home, vm_name);
    Ok(vm)
}

/// The VM directory of an existing VM: [`ManagerError::Deleted`] after `delete`,
/// [`ManagerError::NotFound`] for a name never used.
pub fn existing(home: &Home, vm_name: &str) -> Result<VmDir, ManagerError> {
    let vm = home.vm(vm_name)?;
    if vm.path().is_dir() {
        return Ok(vm);
    }
    if home.tombstone(vm_name).exists() {
        Err(ManagerError::Deleted(vm_name.to_string()))
    } else {
        Err(ManagerError::NotFound(vm_name.to_string()))
    }
}

/// `vm status NAME`.
pub fn status(home: &Home, vm_name: &str) -> Result<Status, ManagerError> {
    match existing(home, vm_name) {
        Ok(vm) if lock::is_running(&vm)? => Ok(Status::Running),
        Ok(_) => Ok(Status::Stopped),
        Err(ManagerError::Deleted(_)) => Ok(Status::Deleted),
        Err(e) => Err(e),
    }
}

/// `vm list`: every VM (not the deleted ones), sorted by name.
pub fn list(home: &Home) -> Result<Vec<(String, Status)>, ManagerError> {
    let dir = home.vms();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ManagerError::io("read", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ManagerError::io("read", &dir))?;
        let Some(n) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !name::is_valid(&n) || !entry.path().is_dir() {
            continue;
        }
        let vm = home.vm(&n)?;
        let st = if lock::is_running(&vm)? {
            Status::Running
        } else {
            Status::Stopped
        };
        out.push((n, st));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One file of a VM directory in `info`.
#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub name: String,
    /// Apparent size.
    pub size: u64,
    /// Bytes allocated on disk (sparse images use little).
    pub allocated: u64,
}

/// `vm info NAME`.
#[derive(Debug, Serialize)]
pub struct Info {
    pub name: String,
    pub path: PathBuf,
    pub status: Status,
    pub config: VmAppConfig,
    pub files: Vec<FileInfo>,
    pub last_stop: Option<LastStop>,
}

pub fn info(home: &Home, vm_name: &str) -> Result<Info, ManagerError> {
    let vm = existing(home, vm_name)?;
    let config = load_config(&vm)?;
    let mut files = Vec::new();
    let dir = fs::read_dir(vm.path()).map_err(ManagerError::io("read", vm.path()))?;
    for entry in dir {
        let entry = entry.map_err(ManagerError::io("read", vm.path()))?;
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push(FileInfo {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
                allocated: meta.blocks() * 512,
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Info {
        name: vm_name.to_string(),
        path: vm.path().to_path_buf(),
        status: if lock::is_running(&vm)? {
            Status::Running
        } else {
            Status::Stopped
        },
        config,
        files,
        last_stop: LastStop::read(&vm.file(home::LAST_STOP))?,
    })
}

/// The VM's `config.json`.
pub fn load_config(vm: &VmDir) -> Result<VmAppConfig, ManagerError> {
    VmAppConfig::load(&vm.file(home::CONFIG))
}

/// Takes the run lock of a VM that must be stopped for `action`.
pub fn lock_stopped(vm: &VmDir, action: &'static str) -> Result<RunLock, ManagerError> {
    RunLock::try_acquire(vm)?.ok_or_else(|| ManagerError::Running {
        name: vm.name().to_string(),
        action,
    })
}

/// `vm set-config NAME FILE`: only when stopped, only changes Android 15's
/// `isCompatibleWith` allows.
pub fn set_config(home: &Home, vm_name: &str, file: &Path) -> Result<VmAppConfig, ManagerError> {
    let new = VmAppConfig::load(file)?;
    new.check_files(file)?;
    let vm = existing(home, vm_name)?;
    let _lock = lock_stopped(&vm, "changing its config")?;
    let old = load_config(&vm)?;
    old.check_compatible(&new)?;
    write_file_atomically(&vm.file(home::CONFIG), &new.to_json())?;
    Ok(new)
}

/// `vm delete NAME`: only when stopped. The name says `deleted` until it is created again.
pub fn delete(home: &Home, vm_name: &str) -> Result<(), ManagerError> {
    let vm = existing(home, vm_name)?;
    let _lock = lock_stopped(&vm, "deleting it")?;
    // Move the directory out of the way in one step, then remove it at leisure.
    let trash = temp_sibling(&home.vms());
    fs::rename(vm.path(), &trash).map_err(ManagerError::io("rename", vm.path()))?;
    let tombstones = home.tombstones();
    let tomb = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tombstones)
        .map_err(ManagerError::io("create", &tombstones))
        .and_then(|()| {
            let p = home.tombstone(vm_name);
            File::create(&p)
                .map(drop)
                .map_err(ManagerError::io("create", p))
        });
    let removed = fs::remove_dir_all(&trash).map_err(ManagerError::io("remove", &trash));
    tomb.and(removed)
}

/// `vm export NAME OUT`: a descriptor directory OUT (which must not exist) holding
/// config.json, instance.img, instance_id and storage.img (if any). The VM must be stopped.
pub fn export(home: &Home, vm_name: &str, out: &Path) -> Result<(), ManagerError> {
    let vm = existing(home, vm_name)?;
    let _lock = lock_stopped(&vm, "exporting it")?;
    let config = load_config(&vm)?;
    let parent = parent_of(out)?;
    build_dir_atomically(&parent, out, &out.display().to_string(), |tmp| {
        for f in descriptor_files(&config) {
            copy_sparse(&vm.file(f), &tmp.join(f))?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        ManagerError::Exists(_) => ManagerError::DestinationExists {
            path: out.to_path_buf(),
        },
        e => e,
    })
}

/// `vm import NAME IN`: a new VM from a descriptor directory, checked first; fails if NAME
/// exists. Every file is opened once, with `O_NOFOLLOW | O_NONBLOCK`, must be a regular file
/// (a symlink, FIFO, socket or device is refused, never waited on), and is checked and copied
/// from that same open file. The config's host paths (`apk`, `extra_apks`, `os_config`,
/// `guest_dir`) must lie inside IN unless `trust_paths` (`--trust-paths`) says the user
/// vouches for them: a descriptor from elsewhere must not make `run` hand host files to a
/// guest (docs/manager.md).
pub fn import(
    home: &Home,
    vm_name: &str,
    input: &Path,
    trust_paths: bool,
) -> Result<VmDir, ManagerError> {
    let vm = home.vm(vm_name)?;
    let (config, files) = check_descriptor(input, trust_paths)?;
    build_dir_atomically(&home.vms(), vm.path(), vm_name, |tmp| {
        for (name, file) in &files {
            copy_sparse_from(file, &input.join(name), &tmp.join(name))?;
        }
        Ok(())
    })?;
    log::debug!("imported {vm_name} (apk {:?})", config.apk);
    clear_tombstone(home, vm_name);
    Ok(vm)
}

fn descriptor_files(config: &VmAppConfig) -> Vec<&'static str> {
    let mut files = PERSISTENT.to_vec();
    if config.encrypted_storage_bytes > 0 {
        files.push(home::STORAGE_IMG);
    }
    files
}

/// Opens a file of an imported directory: `O_NOFOLLOW | O_NONBLOCK` (a symlink fails, a FIFO
/// does not block), then it must be a regular file. `Ok(None)` when it does not exist.
fn open_import_file(dir: &Path, name: &str) -> Result<Option<File>, ManagerError> {
    let path = dir.join(name);
    let bad = |reason: String| ManagerError::Descriptor {
        path: dir.to_path_buf(),
        reason,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(bad(format!(
                "{name} is a symbolic link, not a regular file"
            )));
        }
        Err(e) => return Err(ManagerError::io("open", &path)(e)),
    };
    let ft = file
        .metadata()
        .map_err(ManagerError::io("stat", &path))?
        .file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(bad(format!("{name} is {what}, not a regular file")));
    }
    Ok(Some(file))
}

/// Reads at most `max` bytes of `file` from offset 0; `Err` if it holds more.
fn read_bounded(file: &File, path: &Path, max: u64) -> Result<Vec<u8>, ManagerError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ManagerError::io("read", path))?;
    Ok(bytes)
}

/// A file of an imported directory, open, with its name.
type OpenedFile = (&'static str, File);

/// Checks a descriptor directory; returns its config and its files, open.
fn check_descriptor(
    dir: &Path,
    trust_paths: bool,
) -> Result<(VmAppConfig, Vec<OpenedFile>), ManagerError> {
    let bad = |reason: String| ManagerError::Descriptor {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let need = |name: &str| -> Result<File, ManagerError> {
        open_import_file(dir, name)?.ok_or_else(|| bad(format!("{name} is missing")))
    };
    let (config_file, img_file, id_file) = (
        need(home::CONFIG)?,
        need(home::INSTANCE_IMG)?,
        need(home::INSTANCE_ID)?,
    );
    let max = super::config::MAX_CONFIG_SIZE;
    let config_path = dir.join(home::CONFIG);
    let bytes = read_bounded(&config_file, &config_path, max)?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("config.json is larger than {max} bytes")));
    }
    let config = VmAppConfig::parse(&bytes, &config_path)?;
    let img_path = dir.join(home::INSTANCE_IMG);
    let header = read_bounded(&img_file, &img_path, 64)?;
    partition::check_instance_header(&header).map_err(|reason| {
        partition::PartitionError::NotInstanceImage {
            path: img_path.clone(),
            reason,
        }
    })?;
    let id_path = dir.join(home::INSTANCE_ID);
    let id = read_bounded(&id_file, &id_path, partition::INSTANCE_ID_LEN as u64)?;
    if id.len() != partition::INSTANCE_ID_LEN {
        return Err(partition::PartitionError::InstanceIdSize {
            path: id_path,
            size: id.len() as u64,
        }
        .into());
    }
    let mut files = vec![
        (home::CONFIG, config_file),
        (home::INSTANCE_ID, id_file),
        (home::INSTANCE_IMG, img_file),
    ];
    let storage = open_import_file(dir, home::STORAGE_IMG)?;
    match (config.encrypted_storage_bytes > 0, storage) {
        (true, None) => {
            return Err(bad(format!(
                "storage.img is missing (the config has encrypted_storage_bytes {})",
                config.encrypted_storage_bytes
            )));
        }
        (false, Some(_)) => {
            return Err(bad(
                "storage.img is present but the config has no encrypted storage".into(),
            ));
        }
        (true, Some(f)) => files.push((home::STORAGE_IMG, f)),
        (false, None) => {}
    }
    if !trust_paths {
        check_paths_inside(&config, dir)?;
    }
    Ok((config, files))
}

/// The config's host paths must lie inside `dir` (symlinks resolved): a descriptor from
/// elsewhere must not name host files that `run` would hand to the guest.
fn check_paths_inside(config: &VmAppConfig, dir: &Path) -> Result<(), ManagerError> {
    let root = fs::canonicalize(dir).map_err(ManagerError::io("resolve", dir))?;
    let mut paths: Vec<(String, PathBuf)> = vec![("apk".into(), config.apk.clone())];
    for (i, p) in config.extra_apks.iter().enumerate() {
        paths.push((format!("extra_apks[{i}]"), PathBuf::from(p)));
    }
    if let Some(p) = &config.os_config {
        paths.push(("os_config".into(), p.clone()));
    }
    if let Some(p) = &config.guest_dir {
        paths.push(("guest_dir".into(), p.clone()));
    }
    for (field, p) in paths {
        if !path_inside(&p, &root) {
            return Err(ManagerError::Descriptor {
                path: dir.to_path_buf(),
                reason: format!(
                    "config.json: {field} {p:?} is outside the imported directory; check the \
                     file it names and import with --trust-paths to accept it"
                ),
            });
        }
    }
    Ok(())
}

/// True when `p` is inside `root` (canonical): lexically, with no `..`, and also after
/// resolving symlinks when it exists.
fn path_inside(p: &Path, root: &Path) -> bool {
    use std::path::Component;
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    match fs::canonicalize(p) {
        Ok(real) => real.starts_with(root),
        Err(_) => p.starts_with(root),
    }
}

fn clear_tombstone(home: &Home, vm_name: &str) {
    let p = home.tombstone(vm_name);
    if let Err(e) = fs::remove_file(&p)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("cannot remove the tombstone {}: {e}", p.display());
    }
}

fn parent_of(path: &Path) -> Result<PathBuf, ManagerError> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(PathBuf::from(".")),
        Some(p) => Ok(p.to_path_buf()),
        None => Err(ManagerError::DestinationExists {
            path: path.to_path_buf(),
        }),
    }
}

/// `<parent>/.partial-<64 hex digits>`: never a VM name (too long).
fn temp_sibling(parent: &Path) -> PathBuf {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    parent.join(format!(".partial-{a}{b}"))
}

/// Builds a directory under a temporary name in `parent` with `fill`, then renames it to
/// `dest` unless `dest` exists ([`ManagerError::Exists`] naming `what`). Any failure removes
/// the temporary directory.
fn build_dir_atomically(
    parent: &Path,
    dest: &Path,
    what: &str,
    fill: impl FnOnce(&Path) -> Result<(), ManagerError>,
) -> Result<(), ManagerError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(ManagerError::io("create", parent))?;
    if dest.exists() {
        return Err(ManagerError::Exists(what.to_string()));
    }
    let tmp = temp_sibling(parent);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(ManagerError::io("create", &tmp))?;
    let result = fill(&tmp)
        .and_then(|()| crate::fsutil::sync_dir(&tmp).map_err(ManagerError::io("sync", &tmp)))
        .and_then(|()| {
            rename_noreplace(&tmp, dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ManagerError::Exists(what.to_string())
                } else {
                    ManagerError::io("rename", dest)(e)
                }
            })
        })
        .and_then(|()| crate::fsutil::sync_dir(parent).map_err(ManagerError::io("sync", parent)));
    if result.is_err()
        && let Err(e) = fs::remove_dir_all(&tmp)
    {
        log::warn!("cannot remove {}: {e}", tmp.display());
    }
    result
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: fails with `AlreadyExists` if `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes a new file (fails if it exists), mode 0600, synced.
fn write_new_file(path: &Path, data: &[u8]) -> Result<(), ManagerError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(ManagerError::io("create", path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(ManagerError::io("write", path))
}

/// Replaces `path` with `data` in one step (a temporary file beside it, synced, then
/// renamed; the directory synced after).
pub fn write_file_atomically(path: &Path, data: &[u8]) -> Result<(), ManagerError> {
    crate::fsutil::replace_file(path, data, 0o600).map_err(ManagerError::io("write", path))
}

/// Copies a regular file to a new file, keeping holes (SEEK_DATA/SEEK_HOLE; a plain copy
/// where the file system has no hole support).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<u64, ManagerError> {
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(from)
        .map_err(ManagerError::io("open", from))?;
    copy_sparse_from(&src, from, to)
}

/// [`copy_sparse`] from a file already open (`from` names it in errors).
fn copy_sparse_from(src: &File, from: &Path, to: &Path) -> Result<u64, ManagerError> {
    use std::os::fd::AsRawFd;
    let meta = src.metadata().map_err(ManagerError::io("stat", from))?;
    if !meta.is_file() {
        return Err(ManagerError::io("copy", from)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let len = meta.len();
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(ManagerError::io("create", to))?;
    dst.set_len(len).map_err(ManagerError::io("truncate", to))?;
    let fd = src.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let Ok(off) = libc::off_t::try_from(pos) else {
            break;
        };
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        let (start, end) = if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => (pos, len),
                _ => return Err(ManagerError::io("seek", from)(e)),
            }
        } else {
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let hole = if hole < 0 { len } else { hole as u64 };
            (data as u64, hole.min(len))
        };
        let mut at = start;
        while at < end {
            let n = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let chunk = &mut buf[..n];
            src.read_exact_at(chunk, at)
                .map_err(ManagerError::io("read", from))?;
            dst.write_all_at(chunk, at)
                .map_err(ManagerError::io("write", to))?;
            at += n as u64;
        }
        pos = end.max(pos + 1);
    }
    dst.sync_all().map_err(ManagerError::io("sync", to))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use crate::payload::partition::check_instance_image;

    fn config(storage: u64) -> VmAppConfig {
        let mut c = VmAppConfig::parse(
            br#"{"apk": "/a.apk", "config_path": "assets/vm_config.json"}"#,
            Path::new("c"),
        )
        .unwrap();
        c.encrypted_storage_bytes = storage;
        c
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn create_writes_android_files() {
        let t = TempDir::new("mgr-create");
        let home = Home::at(t.path());
        let vm = create_with(&home, "a", &config(65536), &mut |_| Ok(())).unwrap();
        assert_eq!(
            entries(vm.path()),
            ["config.json", "instance.img", "instance_id", "storage.img"]
        );
        check_instance_image(&vm.file(home::INSTANCE_IMG)).unwrap();
        assert_eq!(
            fs::metadata(vm.file(home::INSTANCE_IMG)).unwrap().len(),
            10 << 20
        );
        assert_eq!(fs::read(vm.file(home::INSTANCE_ID)).unwrap().len(), 64);
        let s = fs::read(vm.file(home::STORAGE_IMG)).unwrap();
        assert_eq!((s.len(), &s[..19]), (65536, &b"UNFORMATTED-STORAGE"[..]));
        assert_eq!(load_config(&vm).unwrap(), config(65536));
        // No storage without storage bytes; a second create of a name fails.
        let b = create_with(&home, "b", &config(0), &mut |_| Ok(())).unwrap();
        assert!(!b.file(home::STORAGE_IMG).exists());
        let e = create_with(&home, "a", &config(0), &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, ManagerError::Exists(_)), "{e}");
        assert_eq!(entries(&home.vms()), ["a", "b"]);
        assert_eq!(
            list(&home).unwrap(),
            [("a".into(), Status::Stopped), ("b".into(), Status::Stopped)]
        );
    }

    #[test]
    fn a_failed_create_leaves_nothing() {
        for fail_at in ["config.json", "instance.img", "instance_id", "storage.img"] {
            let t = TempDir::new("mgr-atomic");
            let home = Home::at(t.path());
            let e = create_with(&home, "a", &config(4096), &mut |step| {
                if step == fail_at {
                    Err(ManagerError::Failed(format!("injected at {step}")))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
            assert!(e.to_string().contains(fail_at), "{e}");
            assert!(
                entries(&home.vms()).is_empty(),
                "{fail_at}: {:?}",
                entries(&home.vms())
            );
            assert!(matches!(status(&home, "a"), Err(ManagerError::NotFound(_))));
        }
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_name() {
        let t = TempDir::new("mgr-rename");
        let a = t.path().join("a");
        let b = t.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        rename_noreplace(&a, &t.path().join("c")).unwrap();
        assert!(!a.exists());
    }

    #[test]
    fn tombstones() {
        let t = TempDir::new("mgr-tomb");
        let home = Home::at(t.path());
        assert!(matches!(status(&home, "a"), Err(ManagerError::NotFound(_))));
        create_with(&home, "a", &config(0), &mut |_| Ok(())).unwrap();
        assert_eq!(status(&home, "a").unwrap(), Status::Stopped);
        delete(&home, "a").unwrap();
        assert_eq!(status(&home, "a").unwrap(), Status::Deleted);
        assert!(list(&home).unwrap().is_empty());
        assert!(entries(&home.vms()).is_empty(), "trash left behind");
        assert!(matches!(delete(&home, "a"), Err(ManagerError::Deleted(_))));
        assert!(matches!(info(&home, "a"), Err(ManagerError::Deleted(_))));
        // A new create of the name ends the tombstone.
        create_with(&home, "a", &config(0), &mut |_| Ok(())).unwrap();
        assert_eq!(status(&home, "a").unwrap(), Status::Stopped);
    }

    #[test]
    fn running_vms_cannot_change() {
        let t = TempDir::new("mgr-running");
        let home = Home::at(t.path());
        let vm = create_with(&home, "a", &config(0), &mut |_| Ok(())).unwrap();
        let held = RunLock::try_acquire(&vm).unwrap().unwrap();
        assert_eq!(status(&home, "a").unwrap(), Status::Running);
        assert_eq!(list(&home).unwrap(), [("a".into(), Status::Running)]);
        let e = delete(&home, "a").unwrap_err().to_string();
        assert!(e.contains("running") && e.contains("deleting"), "{e}");
        let out = t.path().join("out");
        assert!(matches!(
            export(&home, "a", &out),
            Err(ManagerError::Running { .. })
        ));
        assert!(!out.exists());
        drop(held);
        delete(&home, "a").unwrap();
    }

    #[test]
    fn set_config_checks_compatibility() {
        let t = TempDir::new("mgr-setcfg");
        let home = Home::at(t.path());
        let apk = t.file("a.apk", b"PK");
        let mut c = config(0);
        c.apk = apk.clone();
        create_with(&home, "a", &c, &mut |_| Ok(())).unwrap();
        let f = t.path().join("new.json");
        let json = |extra: &str| {
            format!(
                r#"{{"apk": {:?}, "config_path": "assets/vm_config.json"{extra}}}"#,
                apk.display()
            )
        };
        fs::write(&f, json(r#", "memory_mib": 512, "cpus": 2"#)).unwrap();
        let new = set_config(&home, "a", &f).unwrap();
        assert_eq!((new.memory_mib, new.cpus), (Some(512), 2));
        assert_eq!(load_config(&home.vm("a").unwrap()).unwrap(), new);
        fs::write(&f, json(r#", "debug": true"#)).unwrap();
        let e = set_config(&home, "a", &f).unwrap_err().to_string();
        assert!(e.contains("debug cannot change"), "{e}");
        fs::write(&f, json(r#", "encrypted_storage_bytes": 4096"#)).unwrap();
        let e = set_config(&home, "a", &f).unwrap_err().to_string();
        assert!(e.contains("encrypted_storage_bytes"), "{e}");
        assert_eq!(load_config(&home.vm("a").unwrap()).unwrap(), new);
        // The APK must exist.
        fs::write(&f, r#"{"apk": "/nonexistent.apk", "config_path": "x"}"#).unwrap();
        let e = set_config(&home, "a", &f).unwrap_err().to_string();
        assert!(e.contains("apk") && e.contains("nonexistent"), "{e}");
    }

    #[test]
    fn export_import_round_trip() {
        let t = TempDir::new("mgr-export");
        let home = Home::at(t.path().join("home"));
        let vm = create_with(&home, "a", &config(1 << 20), &mut |_| Ok(())).unwrap();
        // Guest data in the images must travel.
        File::options()
            .write(true)
            .open(vm.file(home::INSTANCE_IMG))
            .unwrap()
            .write_all_at(b"entry", 512)
            .unwrap();
        let out = t.path().join("desc");
        export(&home, "a", &out).unwrap();
        assert_eq!(
            entries(&out),
            ["config.json", "instance.img", "instance_id", "storage.img"]
        );
        assert!(matches!(
            export(&home, "a", &out),
            Err(ManagerError::DestinationExists { .. })
        ));
        let b = import(&home, "b", &out, true).unwrap();
        for f in ["config.json", "instance.img", "instance_id", "storage.img"] {
            assert_eq!(
                fs::read(vm.file(f)).unwrap(),
                fs::read(b.file(f)).unwrap(),
                "{f}"
            );
        }
        // Sparse: the 10 MiB instance image allocates far less.
        let m = fs::metadata(b.file(home::INSTANCE_IMG)).unwrap();
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            m.blocks() * 512
        );
        assert!(matches!(
            import(&home, "b", &out, true),
            Err(ManagerError::Exists(_))
        ));
        // Import ends a tombstone.
        delete(&home, "a").unwrap();
        import(&home, "a", &out, true).unwrap();
        assert_eq!(status(&home, "a").unwrap(), Status::Stopped);
    }

    #[test]
    fn bad_descriptors_are_refused_and_leave_nothing() {
        let t = TempDir::new("mgr-baddesc");
        let home = Home::at(t.path().join("home"));
        create_with(&home, "a", &config(4096), &mut |_| Ok(())).unwrap();
        let out = t.path().join("desc");
        export(&home, "a", &out).unwrap();
        type Spoil = (&'static str, fn(&Path));
        let cases: [Spoil; 5] = [
            ("instance_id", |d| {
                fs::write(d.join("instance_id"), [0u8; 63]).unwrap()
            }),
            ("instance image", |d| {
                fs::write(d.join("instance.img"), [1u8; 4096]).unwrap()
            }),
            ("storage.img is missing", |d| {
                fs::remove_file(d.join("storage.img")).unwrap()
            }),
            ("config.json", |d| {
                fs::write(d.join("config.json"), b"{").unwrap()
            }),
            ("instance_id is missing", |d| {
                fs::remove_file(d.join("instance_id")).unwrap()
            }),
        ];
        for (i, (want, spoil)) in cases.into_iter().enumerate() {
            let d = t.path().join(format!("bad{i}"));
            fs::create_dir(&d).unwrap();
            for f in entries(&out) {
                fs::copy(out.join(&f), d.join(&f)).unwrap();
            }
            spoil(&d);
            let e = import(&home, "n", &d, true).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert_eq!(entries(&home.vms()), ["a"]);
        }
        assert!(import(&home, "n", &t.path().join("none"), true).is_err());
    }

    /// A descriptor directory exported from a new VM "a" whose config is `cfg`.
    fn exported(t: &TempDir, home: &Home, cfg: &VmAppConfig) -> PathBuf {
        create_with(home, "a", cfg, &mut |_| Ok(())).unwrap();
        let out = t.path().join("desc");
        export(home, "a", &out).unwrap();
        out
    }

    #[test]
    fn import_refuses_host_paths_outside_the_directory() {
        let t = TempDir::new("mgr-import-paths");
        let home = Home::at(t.path().join("home"));
        let out = exported(&t, &home, &config(0));
        // apk "/a.apk" is outside the descriptor directory.
        let e = import(&home, "n", &out, false).unwrap_err().to_string();
        assert!(
            e.contains("apk \"/a.apk\" is outside the imported directory")
                && e.contains("--trust-paths"),
            "{e}"
        );
        assert_eq!(entries(&home.vms()), ["a"]);
        let canon = fs::canonicalize(&out).unwrap();
        let write_config =
            |c: &VmAppConfig| fs::write(out.join("config.json"), c.to_json()).unwrap();
        // Inside the directory: accepted (even before the file exists).
        let mut c = config(0);
        c.apk = canon.join("app.apk");
        write_config(&c);
        import(&home, "inside", &out, false).unwrap();
        // `..` and a symlink leading out are outside.
        for (field, set) in [
            (
                "apk",
                Box::new(|c: &mut VmAppConfig, p: PathBuf| c.apk = p)
                    as Box<dyn Fn(&mut VmAppConfig, PathBuf)>,
            ),
            (
                "os_config",
                Box::new(|c: &mut VmAppConfig, p| c.os_config = Some(p)),
            ),
            (
                "guest_dir",
                Box::new(|c: &mut VmAppConfig, p| c.guest_dir = Some(p)),
            ),
        ] {
            let mut c = config(0);
            c.apk = canon.join("app.apk");
            set(&mut c, canon.join("../outside"));
            write_config(&c);
            let e = import(&home, "n", &out, false).unwrap_err().to_string();
            assert!(e.contains(&format!("{field} ")), "{field}: {e}");
        }
        std::os::unix::fs::symlink("/etc", out.join("link")).unwrap();
        let mut c = config(0);
        c.apk = canon.join("link/passwd");
        write_config(&c);
        let e = import(&home, "n", &out, false).unwrap_err().to_string();
        assert!(e.contains("outside the imported directory"), "{e}");
        // --trust-paths accepts them.
        import(&home, "trusted", &out, true).unwrap();
    }

    #[test]
    fn import_refuses_fifos_and_symlinks_without_hanging() {
        let t = TempDir::new("mgr-import-fifo");
        let home = Home::at(t.path().join("home"));
        let out = exported(&t, &home, &config(4096));
        for name in ["config.json", "instance_id", "storage.img"] {
            let d = t.path().join(format!("fifo-{name}"));
            fs::create_dir(&d).unwrap();
            for f in entries(&out) {
                fs::copy(out.join(&f), d.join(&f)).unwrap();
            }
            fs::remove_file(d.join(name)).unwrap();
            let c = cstring(&d.join(name)).unwrap();
            // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let started = std::time::Instant::now();
            let e = import(&home, "n", &d, true).unwrap_err().to_string();
            assert!(e.contains(&format!("{name} is a FIFO")), "{e}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
        let d = t.path().join("symlinked");
        fs::create_dir(&d).unwrap();
        for f in entries(&out) {
            std::os::unix::fs::symlink(out.join(&f), d.join(&f)).unwrap();
        }
        let e = import(&home, "n", &d, true).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(entries(&home.vms()), ["a"]);
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let t = TempDir::new("mgr-sparse");
        let src = t.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 3 << 20).unwrap();
        f.write_all_at(b"tail", (8 << 20) - 4).unwrap();
        drop(f);
        let dst = t.path().join("dst");
        assert_eq!(copy_sparse(&src, &dst).unwrap(), 8 << 20);
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        assert!(
            copy_sparse(&src, &dst).is_err(),
            "overwrote an existing file"
        );
        let empty = t.file("empty", b"");
        copy_sparse(&empty, &t.path().join("e2")).unwrap();
        assert_eq!(fs::metadata(t.path().join("e2")).unwrap().len(), 0);
    }
}
