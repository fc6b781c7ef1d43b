//! What a validated [`VmConfig`] lets the sandboxed VMM reach (docs/security.md): the boot
//! files and read-only disks to read, writable disks and output files to write, the socket
//! directories to remove its sockets from.

use std::path::{Path, PathBuf};

use super::config::{BootSource, DiskConfig, OutputTarget, VmConfig};
use crate::sandbox::{Credentials, Policy};

/// The directory a socket file lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The policy for running `cfg`, with the control socket at `socket`.
pub fn for_vm(cfg: &VmConfig, socket: Option<&Path>, credentials: Option<Credentials>) -> Policy {
    let mut p = Policy {
        credentials,
        ..Policy::default()
    };
    match &cfg.boot {
        BootSource::Kernel { kernel, initrd, .. } => {
            p.read_only.push(kernel.clone());
            p.read_only.extend(initrd.iter().cloned());
        }
        BootSource::Firmware { image } => p.read_only.push(image.clone()),
    }
    for d in &cfg.disks {
        match d {
            DiskConfig::Image { path, writable, .. } => {
                let list = if *writable {
                    &mut p.read_write
                } else {
                    &mut p.read_only
                };
                list.push(path.clone());
            }
            DiskConfig::Composite { partitions, .. } => {
                for part in partitions {
                    let list = if part.writable {
                        &mut p.read_write
                    } else {
                        &mut p.read_only
                    };
                    list.push(part.path.clone());
                }
            }
        }
    }
    for (flag, out) in [("--serial", &cfg.serial), ("--log", &cfg.log)] {
        if let OutputTarget::File(path) = out
            && !p.outputs.iter().any(|(_, o)| o == path)
        {
            p.outputs.push((flag, path.clone()));
        }
    }
    let sockets = cfg.vsock.as_ref().map(|v| v.uds.as_path()).into_iter();
    for s in sockets.chain(socket) {
        let dir = parent_dir(s);
        if !p.socket_dirs.contains(&dir) {
            p.socket_dirs.push(dir);
        }
        if s.exists() {
            p.chown.push(s.to_path_buf());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::{InputSource, PartitionConfig, VsockConfig};

    #[test]
    fn paths_by_their_mode() {
        let cfg = VmConfig {
            boot: BootSource::Kernel {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                cmdline: String::new(),
            },
            mem_mib: 64,
            vcpus: 1,
            serial: OutputTarget::File("/out".into()),
            log: OutputTarget::File("/out".into()),
            console_in: InputSource::None,
            disks: vec![
                DiskConfig::image("/ro", false),
                DiskConfig::Composite {
                    partitions: vec![
                        PartitionConfig {
                            label: "a".into(),
                            path: "/pa".into(),
                            writable: true,
                        },
                        PartitionConfig {
                            label: "b".into(),
                            path: "/pb".into(),
                            writable: false,
                        },
                    ],
                    writable: true,
                },
            ],
            mmio_cmdline: false,
            vsock: Some(VsockConfig {
                cid: 3,
                uds: "v.sock".into(),
            }),
            output_limit: 64 << 20,
        };
        let p = for_vm(&cfg, Some(Path::new("/run/x/c.sock")), None);
        let paths = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(&p.read_only), ["/k", "/i", "/ro", "/pb"]);
        assert_eq!(paths(&p.read_write), ["/pa"]);
        assert_eq!(p.outputs, [("--serial", PathBuf::from("/out"))]);
        assert_eq!(paths(&p.socket_dirs), [".", "/run/x"]);
        assert!(p.dirs.is_empty());
    }
}
