//! The data directory and the files of a VM directory (docs/manager.md).

use std::path::{Path, PathBuf};

use super::{ManagerError, name};

/// The environment variable naming the data directory.
pub const HOME_ENV: &str = "MICRO_VMM_HOME";

/// The manager's data directory: `$MICRO_VMM_HOME`, else `$XDG_DATA_HOME/micro-vmm`, else
/// `$HOME/.local/share/micro-vmm`. Relative values are ignored, as the XDG spec says.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The data directory from the environment (not created here).
    pub fn from_env() -> Result<Home, ManagerError> {
        let abs = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let root = abs(HOME_ENV)
            .or_else(|| abs("XDG_DATA_HOME").map(|d| d.join("micro-vmm")))
            .or_else(|| abs("HOME").map(|h| h.join(".local/share/micro-vmm")))
            .ok_or(ManagerError::NoHome)?;
        Ok(Home { root })
    }

    /// A data directory at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<home>/vm`: one directory per VM (and the manager's temporary entries, whose names are
    /// too long to be VM names).
    pub fn vms(&self) -> PathBuf {
        self.root.join("vm")
    }

    /// `<home>/deleted`: one empty file per deleted VM name (the tombstones).
    pub fn tombstones(&self) -> PathBuf {
        self.root.join("deleted")
    }

    /// The directory of VM `name` (checked).
    pub fn vm(&self, vm_name: &str) -> Result<VmDir, ManagerError> {
        name::validate(vm_name)?;
        Ok(VmDir {
            name: vm_name.to_string(),
            path: self.vms().join(vm_name),
        })
    }

    /// The tombstone of `name`.
    pub fn tombstone(&self, vm_name: &str) -> PathBuf {
        self.tombstones().join(vm_name)
    }
}

/// One VM directory and the paths of its files.
#[derive(Debug, Clone)]
pub struct VmDir {
    name: String,
    path: PathBuf,
}

/// The persistent files of a VM (what export copies), in Android's descriptor order.
pub const CONFIG: &str = "config.json";
pub const INSTANCE_ID: &str = "instance_id";
pub const INSTANCE_IMG: &str = "instance.img";
pub const STORAGE_IMG: &str = "storage.img";
/// Regenerated on every run.
pub const IDSIG: &str = "idsig";
/// The run lock: held (flock) by the monitor and the VMM while the VM runs.
pub const LOCK: &str = "lock";
/// The current run: `{pid, monitor_pid, started_at}`.
pub const RUN: &str = "run.json";
/// The last run's end: `{reason, exit_code, signal, payload_exit_code, source, at}`.
pub const LAST_STOP: &str = "last_stop.json";
/// The guest console (ttyS0) of the current or last run.
pub const CONSOLE_LOG: &str = "console.log";
/// micro-vmm's own messages (its stderr) of the current or last run.
pub const VMM_LOG: &str = "vmm.log";
/// The log port (ttyS1): the failure string the guest wrote.
pub const FAILURE_LOG: &str = "failure.log";
/// The VM's control socket while it runs.
pub const CONTROL_SOCK: &str = "control.sock";

impl VmDir {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in the directory.
    pub fn file(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }

    /// `extra_idsig_<i>`.
    pub fn extra_idsig(&self, i: usize) -> PathBuf {
        self.path.join(format!("extra_idsig_{i}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let h = Home::at("/d");
        let v = h.vm("a").unwrap();
        assert_eq!(v.path(), Path::new("/d/vm/a"));
        assert_eq!(v.file(CONFIG), Path::new("/d/vm/a/config.json"));
        assert_eq!(v.extra_idsig(1), Path::new("/d/vm/a/extra_idsig_1"));
        assert_eq!(h.tombstone("a"), Path::new("/d/deleted/a"));
        assert!(h.vm("../x").is_err());
    }
}
