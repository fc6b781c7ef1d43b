//! Writing idsigs: `micro-vmm create-idsig` and Android's `createOrUpdateIdsigFile`.
//!
//! The hashing info and Merkle tree are what `apksigner sign --v4-signing-enabled true`
//! writes for the same APK: SHA-256, 4 KiB blocks, no salt, the tree over the whole file.
//! The signing info is what Android 14's `V4Signature::create` writes: the APK's content
//! digest and its signature algorithm ID (v3 block, else v2; see [`super::apk_sig`]), the
//! certificate, public key and signature left empty. An APK without a signature block (an
//! unsigned but valid ZIP) is still accepted and gets Android 13's signing info (all empty,
//! algorithm 0x0301), as `--app` with an unsigned app needs; Android 14's
//! `V4Signature::create` would refuse it. A file that is not a ZIP at all (no end of central
//! directory record: an empty file, random bytes) is refused with [`IdsigError::NotAZip`].

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::IdsigError;
use super::apk_sig::{apk_digest, is_zip};
use super::format::{HashingInfo, Idsig, SigningInfo};
use super::hashtree::{HashTree, input_len};

/// What [`create_or_update_idsig`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsigUpdate {
    /// There was no idsig (or an empty file): it was written.
    Created,
    /// The idsig did not parse or was for another APK: it was rewritten.
    Rewritten,
    /// The idsig parsed and its `apk_digest` is the APK's: left alone.
    Unchanged,
}

/// The signing info for `apk`: its signer's digest and algorithm, or Android 13's defaults
/// when it has no v2/v3 signature.
fn signing_info(apk: &Path) -> Result<SigningInfo, IdsigError> {
    Ok(match apk_digest(apk)? {
        Some(d) => SigningInfo {
            apk_digest: d.digest,
            signature_algorithm_id: d.signature_algorithm_id,
            ..SigningInfo::default()
        },
        None => SigningInfo::default(),
    })
}

/// The idsig for the APK at `apk` (a regular file), without writing it.
pub fn build_idsig(apk: &Path) -> Result<Idsig, IdsigError> {
    let file = File::open(apk).map_err(|source| IdsigError::Open {
        path: apk.to_path_buf(),
        source,
    })?;
    let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !is_file {
        return Err(IdsigError::NotAFile {
            path: apk.to_path_buf(),
        });
    }
    let len = input_len(&file, apk)?;
    if !is_zip(&file, apk, len)? {
        return Err(IdsigError::NotAZip {
            path: apk.to_path_buf(),
        });
    }
    idsig_of(&file, apk, len)
}

/// Writes the idsig of any file, ZIP or not (tests of the tree over arbitrary lengths).
#[cfg(test)]
pub(crate) fn create_idsig_of_any_file(path: &Path, out: &Path) -> Result<Idsig, IdsigError> {
    let file = File::open(path).map_err(|source| IdsigError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = input_len(&file, path)?;
    let idsig = idsig_of(&file, path, len)?;
    write_atomically(out, &idsig.to_bytes()?)?;
    Ok(idsig)
}

fn idsig_of(file: &File, apk: &Path, len: u64) -> Result<Idsig, IdsigError> {
    let tree = HashTree::from_file(file, apk, len, &[])?;
    Ok(Idsig {
        hashing_info: HashingInfo {
            salt: Vec::new(),
            raw_root_hash: tree.root_hash,
        },
        signing_info: signing_info(apk)?,
        merkle_tree: tree.tree,
    })
}

/// Writes the idsig of `apk` to `out`, through a temporary file beside it that is renamed
/// over `out` (a reader never sees half a file). Returns what was written.
pub fn create_idsig(apk: &Path, out: &Path) -> Result<Idsig, IdsigError> {
    let idsig = build_idsig(apk)?;
    write_atomically(out, &idsig.to_bytes()?)?;
    Ok(idsig)
}

/// Android's `createOrUpdateIdsigFile` (Android 14+): a missing or empty `idsig` is created;
/// one that parses and whose `apk_digest` is the APK's is left alone; anything else is
/// rewritten. An APK without a v2/v3 signature has no digest to compare, so its idsig is
/// always rewritten (Android 14 refuses such APKs instead).
pub fn create_or_update_idsig(apk: &Path, idsig: &Path) -> Result<IdsigUpdate, IdsigError> {
    let existing_len = match fs::metadata(idsig) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(IdsigError::Open {
                path: idsig.to_path_buf(),
                source,
            });
        }
    };
    let update = match existing_len {
        None | Some(0) => IdsigUpdate::Created,
        Some(_) => {
            let digest = signing_info(apk)?.apk_digest;
            match Idsig::read_signing_info(idsig) {
                Ok(old) if !digest.is_empty() && old.apk_digest == digest => {
                    return Ok(IdsigUpdate::Unchanged);
                }
                Ok(_) => IdsigUpdate::Rewritten,
                Err(e) => {
                    log::info!("rewriting {}: {e}", idsig.display());
                    IdsigUpdate::Rewritten
                }
            }
        }
    };
    create_idsig(apk, idsig)?;
    Ok(update)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IdsigError> {
    crate::fsutil::replace_file(path, bytes, 0o666).map_err(|source| IdsigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::{TempDir, pattern};
    use crate::payload::idsig::apk_sig::V3_BLOCK_ID;
    use crate::payload::idsig::apk_sig::tests::{apk, lp, signer};

    fn signed_apk(data_len: usize, digest_byte: u8) -> Vec<u8> {
        let v3 = lp(&lp(&signer(
            3,
            &[(0x0201, vec![digest_byte; 32])],
            (28, u32::MAX),
        )));
        apk(&pattern(data_len, digest_byte), &[(V3_BLOCK_ID, v3)])
    }

    #[test]
    fn create_writes_tree_and_digest() {
        let dir = TempDir::new("idsig-create");
        let bytes = signed_apk(300_000, 7);
        let apk_path = dir.file("a.apk", &bytes);
        let out = dir.path().join("a.apk.idsig");
        let written = create_idsig(&apk_path, &out).unwrap();
        let back = Idsig::load(&out).unwrap();
        assert_eq!(back, written);
        let tree = HashTree::from_bytes(&bytes, &[]);
        assert_eq!(back.merkle_tree, tree.tree);
        assert_eq!(back.hashing_info.raw_root_hash, tree.root_hash);
        assert!(back.hashing_info.salt.is_empty());
        assert_eq!(back.signing_info.apk_digest, vec![7; 32]);
        assert_eq!(back.signing_info.signature_algorithm_id, 0x0201);
        assert!(back.signing_info.x509_certificate.is_empty());
        assert!(back.signing_info.signature.is_empty());
        // Only the idsig is left in the directory (no temporary file).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn unsigned_zips_get_android_13_defaults() {
        let dir = TempDir::new("idsig-unsigned");
        let data = crate::payload::testutil::zip_of(&[("assets/x", &pattern(5000, 1))]);
        let apk_path = dir.file("u.apk", &data);
        let out = dir.path().join("u.idsig");
        let idsig = create_idsig(&apk_path, &out).unwrap();
        assert_eq!(idsig.signing_info, SigningInfo::default());
        assert_eq!(
            idsig.merkle_tree.len() as u64,
            super::super::hashtree::tree_size(data.len() as u64)
        );
    }

    #[test]
    fn what_is_not_a_zip_is_refused() {
        let dir = TempDir::new("idsig-not-zip");
        let out = dir.path().join("x.idsig");
        // Random-looking bytes (no end of central directory record), and an empty file.
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for data in [Vec::new(), noise, b"PK\x05\x06".to_vec()] {
            let apk_path = dir.file("n.apk", &data);
            let e = create_idsig(&apk_path, &out).unwrap_err();
            assert!(matches!(e, IdsigError::NotAZip { .. }), "{e}");
            assert!(e.to_string().contains("is not an APK"), "{e}");
            assert!(e.is_bad_input());
            assert!(!out.exists());
        }
    }

    #[test]
    fn bad_inputs_and_outputs() {
        let dir = TempDir::new("idsig-create-bad");
        let apk_path = dir.file("a.apk", &signed_apk(1000, 1));
        assert!(matches!(
            create_idsig(&dir.path().join("missing.apk"), &dir.path().join("x")).unwrap_err(),
            IdsigError::Open { .. }
        ));
        assert!(matches!(
            create_idsig(dir.path(), &dir.path().join("x")).unwrap_err(),
            IdsigError::NotAFile { .. }
        ));
        let e = create_idsig(&apk_path, &dir.path().join("no/such/dir/x.idsig")).unwrap_err();
        assert!(matches!(e, IdsigError::Write { .. }), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_or_update_follows_android() {
        let dir = TempDir::new("idsig-update");
        let apk_path = dir.file("a.apk", &signed_apk(20_000, 3));
        let idsig = dir.path().join("a.idsig");
        assert_eq!(
            create_or_update_idsig(&apk_path, &idsig).unwrap(),
            IdsigUpdate::Created
        );
        let good = fs::read(&idsig).unwrap();

        // Same digest: left alone, even though the tree was tampered with (Android compares
        // only the digest).
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        fs::write(&idsig, &tampered).unwrap();
        assert_eq!(
            create_or_update_idsig(&apk_path, &idsig).unwrap(),
            IdsigUpdate::Unchanged
        );
        assert_eq!(fs::read(&idsig).unwrap(), tampered);

        // Garbage, or an idsig of another APK: rewritten.
        fs::write(&idsig, b"garbage").unwrap();
        assert_eq!(
            create_or_update_idsig(&apk_path, &idsig).unwrap(),
            IdsigUpdate::Rewritten
        );
        assert_eq!(fs::read(&idsig).unwrap(), good);
        let other = dir.file("b.apk", &signed_apk(20_000, 4));
        assert_eq!(
            create_or_update_idsig(&other, &idsig).unwrap(),
            IdsigUpdate::Rewritten
        );
        assert_ne!(fs::read(&idsig).unwrap(), good);

        // An empty file counts as missing.
        fs::write(&idsig, b"").unwrap();
        assert_eq!(
            create_or_update_idsig(&apk_path, &idsig).unwrap(),
            IdsigUpdate::Created
        );
        assert_eq!(fs::read(&idsig).unwrap(), good);

        // No digest to compare: always rewritten.
        let unsigned = dir.file(
            "u.apk",
            &crate::payload::testutil::zip_of(&[("x", &pattern(9000, 1))]),
        );
        assert_eq!(
            create_or_update_idsig(&unsigned, &idsig).unwrap(),
            IdsigUpdate::Rewritten
        );
        assert_eq!(
            create_or_update_idsig(&unsigned, &idsig).unwrap(),
            IdsigUpdate::Rewritten
        );
    }
}
