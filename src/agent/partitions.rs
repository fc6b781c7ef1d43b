//! The payload partitions by GPT label, as the kernel lists them: each
//! `/sys/class/block/<name>/uevent` holds `DEVNAME=` and, for a GPT partition with a name,
//! `PARTNAME=`. The device is `/dev/<DEVNAME>` (devtmpfs).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::AgentError;

/// The metadata partition.
pub const METADATA: &str = "payload-metadata";
/// The APK.
pub const APK: &str = "microdroid-apk";
/// The APK's idsig.
pub const APK_IDSIG: &str = "microdroid-apk-idsig";
/// The instance partition (optional; this guest has no use for it).
pub const INSTANCE: &str = "vm-instance";
/// The storage partition (optional).
pub const ENCRYPTEDSTORE: &str = "encryptedstore";
/// Labels the agent cannot go on without.
pub const REQUIRED: [&str; 3] = [METADATA, APK, APK_IDSIG];
/// Prefix of extra APK `i`'s label (`extra-apk-<i>`).
pub const EXTRA_APK_PREFIX: &str = "extra-apk-";
/// Prefix of extra idsig `i`'s label (`extra-idsig-<i>`).
pub const EXTRA_IDSIG_PREFIX: &str = "extra-idsig-";

/// Most entries read from the block device directory (a GPT holds 128 partitions).
const MAX_BLOCK_DEVICES: usize = 4096;
/// Most bytes read from one `uevent` file.
const MAX_UEVENT: u64 = 4096;
/// Most extra APKs accepted.
pub const MAX_EXTRA_APKS: usize = 64;
/// Between scans while waiting.
const POLL: Duration = Duration::from_millis(50);

/// One extra APK and its idsig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraApk {
    pub apk: PathBuf,
    pub idsig: PathBuf,
}

/// Labelled partitions found: label -> device path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    by_label: BTreeMap<String, PathBuf>,
}

impl PartitionMap {
    /// The device of the partition labelled `label`.
    pub fn get(&self, label: &str) -> Option<&Path> {
        self.by_label.get(label).map(PathBuf::as_path)
    }

    /// The device of a required partition (an error naming the label if absent).
    pub fn require(&self, label: &str) -> Result<&Path, AgentError> {
        self.get(label)
            .ok_or_else(|| AgentError::MissingPartitions {
                missing: vec![label.to_string()],
                waited: Duration::ZERO,
            })
    }

    /// Every label found, sorted.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(String::as_str)
    }

    /// The extra APKs, in index order. `extra-apk-<i>` and `extra-idsig-<i>` must come in
    /// pairs numbered 0, 1, 2, ... without gaps (`<i>` in decimal, no leading zeros).
    pub fn extra_apks(&self) -> Result<Vec<ExtraApk>, AgentError> {
        let mut apks = BTreeMap::new();
        let mut idsigs = BTreeMap::new();
        for (label, dev) in &self.by_label {
            let (map, index) = if let Some(i) = label.strip_prefix(EXTRA_APK_PREFIX) {
                (&mut apks, i)
            } else if let Some(i) = label.strip_prefix(EXTRA_IDSIG_PREFIX) {
                (&mut idsigs, i)
            } else {
                continue;
            };
            let i = parse_index(index)
                .ok_or_else(|| AgentError::ExtraApks(format!("bad label {label:?}")))?;
            if i >= MAX_EXTRA_APKS {
                return Err(AgentError::ExtraApks(format!(
                    "{label:?}: at most {MAX_EXTRA_APKS} extra APKs are supported"
                )));
            }
            map.insert(i, dev.clone());
        }
        let mut out = Vec::with_capacity(apks.len());
        for i in 0..apks.len().max(idsigs.len()) {
            match (apks.remove(&i), idsigs.remove(&i)) {
                (Some(apk), Some(idsig)) => out.push(ExtraApk { apk, idsig }),
                (None, _) => {
                    return Err(AgentError::ExtraApks(format!(
                        "no partition {EXTRA_APK_PREFIX}{i}"
                    )));
                }
                (_, None) => {
                    return Err(AgentError::ExtraApks(format!(
                        "no partition {EXTRA_IDSIG_PREFIX}{i}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// A decimal index without sign or leading zeros.
fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// `PARTNAME` and `DEVNAME` of one `uevent` file's text.
pub fn parse_uevent(text: &str) -> (Option<&str>, Option<&str>) {
    let mut partname = None;
    let mut devname = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("PARTNAME=") {
            partname = Some(v);
        } else if let Some(v) = line.strip_prefix("DEVNAME=") {
            devname = Some(v);
        }
    }
    (partname, devname)
}

/// A device name that stays inside `/dev` (no `/`, not `.` or `..`, not empty).
fn valid_devname(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Lists the labelled partitions under `sysfs_block` (`/sys/class/block`), with their devices
/// under `dev_dir`. Entries whose `uevent` vanished (a device going away) are skipped; two
/// partitions with the same label are an error.
pub fn scan(sysfs_block: &Path, dev_dir: &Path) -> Result<PartitionMap, AgentError> {
    let sysfs_err = |reason: String| AgentError::Sysfs {
        path: sysfs_block.to_path_buf(),
        reason,
    };
    let dir = fs::read_dir(sysfs_block).map_err(|e| sysfs_err(e.to_string()))?;
    let mut found: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for (n, entry) in dir.enumerate() {
        if n >= MAX_BLOCK_DEVICES {
            return Err(sysfs_err(format!(
                "more than {MAX_BLOCK_DEVICES} block devices"
            )));
        }
        let entry = entry.map_err(|e| sysfs_err(e.to_string()))?;
        let Some(text) = read_uevent(&entry.path().join("uevent")) else {
            continue;
        };
        let (Some(label), Some(devname)) = parse_uevent(&text) else {
            continue;
        };
        if !valid_devname(devname) {
            return Err(sysfs_err(format!(
                "{:?}: bad DEVNAME {devname:?}",
                entry.file_name()
            )));
        }
        if let Some((first, _)) = found.get(label) {
            return Err(AgentError::DuplicateLabel {
                label: label.to_string(),
                first: first.clone(),
                second: devname.to_string(),
            });
        }
        found.insert(
            label.to_string(),
            (devname.to_string(), dev_dir.join(devname)),
        );
    }
    Ok(PartitionMap {
        by_label: found.into_iter().map(|(l, (_, p))| (l, p)).collect(),
    })
}

/// A `uevent` file's text, or `None` if it cannot be read (gone, or not a device).
fn read_uevent(path: &Path) -> Option<String> {
    let file = fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_UEVENT).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Scans until every label in `required` is present and its device node exists, or
/// `timeout` passes. The error lists what is still missing.
pub fn wait_for(
    sysfs_block: &Path,
    dev_dir: &Path,
    required: &[&str],
    timeout: Duration,
) -> Result<PartitionMap, AgentError> {
    let start = Instant::now();
    loop {
        let map = scan(sysfs_block, dev_dir);
        let missing: Vec<String> = match &map {
            Ok(map) => required
                .iter()
                .filter(|l| !map.get(l).is_some_and(Path::exists))
                .map(|l| l.to_string())
                .collect(),
            // The block directory itself may not be there yet.
            Err(AgentError::Sysfs { .. }) => required.iter().map(|l| l.to_string()).collect(),
            Err(_) => return map,
        };
        if missing.is_empty() {
            return map;
        }
        if start.elapsed() >= timeout {
            return match map {
                Err(e) => Err(e),
                Ok(_) => Err(AgentError::MissingPartitions {
                    missing,
                    waited: timeout,
                }),
            };
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    /// A fake `/sys/class/block` and `/dev` under a temporary directory.
    struct FakeSys {
        dir: TempDir,
    }

    impl FakeSys {
        fn new(name: &str) -> FakeSys {
            let dir = TempDir::new(name);
            fs::create_dir_all(dir.path().join("sys")).unwrap();
            fs::create_dir_all(dir.path().join("dev")).unwrap();
            FakeSys { dir }
        }

        fn sys(&self) -> PathBuf {
            self.dir.path().join("sys")
        }

        fn dev(&self) -> PathBuf {
            self.dir.path().join("dev")
        }

        /// A block device `name`, with a device node, labelled `label` (if any).
        fn add(&self, name: &str, label: Option<&str>) {
            let d = self.sys().join(name);
            fs::create_dir_all(&d).unwrap();
            let mut text = format!("MAJOR=254\nMINOR=1\nDEVNAME={name}\nDEVTYPE=partition\n");
            if let Some(l) = label {
                text += &format!("PARTN=1\nPARTNAME={l}\n");
            }
            fs::write(d.join("uevent"), text).unwrap();
            fs::write(self.dev().join(name), b"").unwrap();
        }
    }

    #[test]
    fn uevent_fields() {
        let text = "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=payload-metadata\n";
        assert_eq!(parse_uevent(text), (Some("payload-metadata"), Some("vda1")));
        assert_eq!(
            parse_uevent("DEVNAME=vda\nDEVTYPE=disk\n"),
            (None, Some("vda"))
        );
        assert_eq!(parse_uevent(""), (None, None));
    }

    #[test]
    fn finds_partitions_by_label() {
        let s = FakeSys::new("agent-parts");
        s.add("vda", None);
        s.add("vda1", Some(METADATA));
        s.add("vda2", Some(APK));
        s.add("vda3", Some(APK_IDSIG));
        s.add("vdb", None);
        s.add("vdb1", Some(INSTANCE));
        // A directory without uevent (not a device) is skipped.
        fs::create_dir_all(s.sys().join("power")).unwrap();
        let map = scan(&s.sys(), &s.dev()).unwrap();
        assert_eq!(map.get(APK), Some(s.dev().join("vda2").as_path()));
        assert_eq!(map.get(INSTANCE), Some(s.dev().join("vdb1").as_path()));
        assert_eq!(map.get(ENCRYPTEDSTORE), None);
        assert_eq!(
            map.labels().collect::<Vec<_>>(),
            [APK, APK_IDSIG, METADATA, INSTANCE]
        );
        assert!(map.require(ENCRYPTEDSTORE).is_err());
        assert_eq!(map.extra_apks().unwrap(), []);
    }

    #[test]
    fn duplicate_labels_and_bad_devnames_are_errors() {
        let s = FakeSys::new("agent-parts-dup");
        s.add("vda1", Some(APK));
        s.add("vdb1", Some(APK));
        let err = scan(&s.sys(), &s.dev()).unwrap_err().to_string();
        assert!(
            err.contains("vda1") && err.contains("vdb1") && err.contains(APK),
            "{err}"
        );

        let s = FakeSys::new("agent-parts-devname");
        fs::create_dir_all(s.sys().join("x")).unwrap();
        fs::write(
            s.sys().join("x/uevent"),
            "DEVNAME=../etc/passwd\nPARTNAME=microdroid-apk\n",
        )
        .unwrap();
        let err = scan(&s.sys(), &s.dev()).unwrap_err().to_string();
        assert!(err.contains("DEVNAME"), "{err}");
    }

    #[test]
    fn extra_apks_come_in_numbered_pairs() {
        let s = FakeSys::new("agent-parts-extra");
        s.add("vda4", Some("extra-apk-0"));
        s.add("vda5", Some("extra-idsig-0"));
        s.add("vda6", Some("extra-apk-1"));
        s.add("vda7", Some("extra-idsig-1"));
        let map = scan(&s.sys(), &s.dev()).unwrap();
        assert_eq!(
            map.extra_apks().unwrap(),
            [
                ExtraApk {
                    apk: s.dev().join("vda4"),
                    idsig: s.dev().join("vda5")
                },
                ExtraApk {
                    apk: s.dev().join("vda6"),
                    idsig: s.dev().join("vda7")
                }
            ]
        );

        for (labels, needle) in [
            (&["extra-apk-0"][..], "extra-idsig-0"),
            (&["extra-idsig-0"][..], "extra-apk-0"),
            (
                &[
                    "extra-apk-0",
                    "extra-idsig-0",
                    "extra-apk-2",
                    "extra-idsig-2",
                ][..],
                "extra-apk-1",
            ),
            (&["extra-apk-01"][..], "bad label"),
            (&["extra-apk-x"][..], "bad label"),
            (&["extra-apk-"][..], "bad label"),
            (&["extra-apk-99999999999999999999999"][..], "bad label"),
            (&["extra-apk-64"][..], "at most"),
        ] {
            let s = FakeSys::new("agent-parts-extra-bad");
            for (i, l) in labels.iter().enumerate() {
                s.add(&format!("vdc{i}"), Some(l));
            }
            let err = scan(&s.sys(), &s.dev())
                .unwrap()
                .extra_apks()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{labels:?}: {err}");
        }
    }

    #[test]
    fn waits_for_late_partitions() {
        let s = FakeSys::new("agent-parts-wait");
        s.add("vda1", Some(METADATA));
        let sys = s.sys();
        let dev = s.dev();
        let late = std::thread::spawn({
            let sys = sys.clone();
            let dev = dev.clone();
            move || {
                std::thread::sleep(Duration::from_millis(200));
                for (n, l) in [("vda2", APK), ("vda3", APK_IDSIG)] {
                    fs::create_dir_all(sys.join(n)).unwrap();
                    fs::write(dev.join(n), b"").unwrap();
                    fs::write(
                        sys.join(n).join("uevent"),
                        format!("DEVNAME={n}\nPARTNAME={l}\n"),
                    )
                    .unwrap();
                }
            }
        });
        let t = Instant::now();
        let map = wait_for(&sys, &dev, &REQUIRED, Duration::from_secs(10)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert!(map.get(APK_IDSIG).is_some());
        late.join().unwrap();
    }

    #[test]
    fn waiting_ends_with_the_missing_labels() {
        let s = FakeSys::new("agent-parts-timeout");
        s.add("vda1", Some(METADATA));
        // Labelled, but no device node yet.
        fs::create_dir_all(s.sys().join("vda2")).unwrap();
        fs::write(
            s.sys().join("vda2/uevent"),
            format!("DEVNAME=vda2\nPARTNAME={APK}\n"),
        )
        .unwrap();
        let t = Instant::now();
        let err = wait_for(&s.sys(), &s.dev(), &REQUIRED, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(
            err.contains(APK) && err.contains(APK_IDSIG) && !err.contains(METADATA),
            "{err}"
        );
        // No block directory at all.
        let err = wait_for(
            &s.dev().join("nope"),
            &s.dev(),
            &REQUIRED,
            Duration::from_millis(100),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
