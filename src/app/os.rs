//! The guest OS an app runs on: an OS config in vmconfig format (`resources/os/<name>.json`,
//! built into the binary) whose relative paths point into the guest-asset directory.
//!
//! The guest-asset directory holds what `scripts/build-guest` produces (`vmlinux`,
//! `initrd.img`): `--guest-dir DIR`, else `$MICRO_VMM_GUEST_DIR`, else
//! `$XDG_CACHE_HOME/micro-vmm/guest` (`~/.cache/micro-vmm/guest`). `--os-config FILE` replaces
//! the built-in config; its relative paths resolve against the file's own directory, as for
//! `micro-vmm run --config`.

use std::path::{Path, PathBuf};

use crate::api::BootSource;
use crate::api::vmconfig::{self, VmConfigError, VmConfigFile};

use super::AppError;

/// The OS configs built into micro-vmm: (name, vmconfig JSON).
const BUILTIN: &[(&str, &str)] = &[(
    "microdroid",
    include_str!("../../resources/os/microdroid.json"),
)];

/// The OS an app config asks for when it names none (`os.name` absent or `""`).
pub const DEFAULT_OS: &str = "microdroid";

/// A validated guest OS: how to boot it and its default memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsConfig {
    /// Where it came from, for messages.
    pub source: String,
    pub boot: BootSource,
    pub mem_mib: Option<u64>,
}

/// The guest-asset directory: `explicit`, else `$MICRO_VMM_GUEST_DIR`, else the cache default.
pub fn guest_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("MICRO_VMM_GUEST_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    cache_dir().join("guest")
}

/// `$XDG_CACHE_HOME/micro-vmm`, else `$HOME/.cache/micro-vmm`, else `/tmp/micro-vmm-cache`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match base {
        Some(b) => b.join("micro-vmm"),
        None => PathBuf::from("/tmp/micro-vmm-cache"),
    }
}

/// Loads the OS: `os_config` if given, else the built-in config named `name` ("" means
/// [`DEFAULT_OS`]) with paths resolved against `guest_dir`. The kernel (and initrd) must exist.
pub fn load(name: &str, os_config: Option<&Path>, guest_dir: &Path) -> Result<OsConfig, AppError> {
    let (source, file) = match os_config {
        Some(path) => (path.display().to_string(), vmconfig::load(path)?),
        None => {
            let name = if name.is_empty() { DEFAULT_OS } else { name };
            let Some((_, json)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
                return Err(AppError::UnknownOs {
                    name: name.to_string(),
                    known: BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let source = format!("built-in OS config {name:?} (resources/os/{name}.json)");
            (
                source.clone(),
                vmconfig::parse_as(&source, json, guest_dir)?,
            )
        }
    };
    from_file(source, file)
}

fn from_file(source: String, file: VmConfigFile) -> Result<OsConfig, AppError> {
    let boot = match file.boot {
        Some(b @ BootSource::Kernel { .. }) => b,
        Some(BootSource::Firmware { .. }) | None => {
            return Err(AppError::OsConfig {
                source_name: source,
                reason: "an app guest boots a kernel; a bootloader is not supported".into(),
            });
        }
    };
    if !file.disks.is_empty() {
        return Err(AppError::OsConfig {
            source_name: source,
            reason: "OS disks are not supported: the app guest is a kernel and an initramfs".into(),
        });
    }
    if let BootSource::Kernel { kernel, initrd, .. } = &boot {
        for (what, path) in [("kernel", Some(kernel)), ("initrd", initrd.as_ref())] {
            let Some(path) = path else { continue };
            if !path.is_file() {
                return Err(AppError::MissingGuestAsset {
                    what,
                    path: path.clone(),
                    source_name: source,
                });
            }
        }
    }
    Ok(OsConfig {
        source,
        boot,
        mem_mib: file.mem_mib,
    })
}

impl From<VmConfigError> for AppError {
    fn from(e: VmConfigError) -> Self {
        AppError::OsConfigFile(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    fn assets() -> TempDir {
        let d = TempDir::new("os");
        d.file("vmlinux", b"k");
        d.file("initrd.img", b"i");
        d
    }

    #[test]
    fn builtin_resolves_against_the_guest_dir() {
        let d = assets();
        let os = load("", None, d.path()).unwrap();
        assert_eq!(os.mem_mib, Some(256));
        let BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } = os.boot
        else {
            panic!("not a kernel")
        };
        assert_eq!(kernel, d.path().join("vmlinux"));
        assert_eq!(initrd, Some(d.path().join("initrd.img")));
        assert!(cmdline.contains("console=ttyS0"));
        assert_eq!(
            load("microdroid", None, d.path()).unwrap().mem_mib,
            Some(256)
        );
    }

    #[test]
    fn missing_assets_and_unknown_os_are_clear_errors() {
        let d = TempDir::new("os-empty");
        let e = load("", None, d.path()).unwrap_err().to_string();
        assert!(
            e.contains("kernel") && e.contains("vmlinux") && e.contains("build-guest"),
            "{e}"
        );
        let e = load("android", None, d.path()).unwrap_err().to_string();
        assert!(e.contains("android") && e.contains("microdroid"), "{e}");
    }

    #[test]
    fn an_explicit_os_config_resolves_against_its_own_directory() {
        let d = assets();
        let cfg = d.path().join("my-os.json");
        std::fs::write(
            &cfg,
            r#"{"kernel": "vmlinux", "params": "quiet", "platform_version": "~1.0"}"#,
        )
        .unwrap();
        let os = load("ignored", Some(&cfg), Path::new("/nonexistent")).unwrap();
        assert!(
            matches!(os.boot, BootSource::Kernel { kernel, .. } if kernel == d.path().join("vmlinux"))
        );
        std::fs::write(
            &cfg,
            r#"{"bootloader": "vmlinuz", "platform_version": "~1.0"}"#,
        )
        .unwrap();
        assert!(load("", Some(&cfg), d.path()).is_err());
        std::fs::write(&cfg, r#"{"kernel": "vmlinuz", "platform_version": "~2.0"}"#).unwrap();
        assert!(load("", Some(&cfg), d.path()).is_err());
    }
}
