//! Checking an APK against an idsig (ours or apksigner's), and the guest agent's root-hash
//! check of a file or block device.

use std::path::Path;

use super::format::Idsig;
use super::hashtree::{
    BLOCK_SIZE, HASH_SIZE, HashTree, check_tree, input_len, level0_of, open_input, tree_size,
};
use super::{IdsigError, hex};

/// What a successful [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub apk_len: u64,
    pub root_hash: [u8; HASH_SIZE],
    pub tree_size: u64,
}

/// Loads the idsig at `idsig` and checks `apk` against it ([`verify_idsig`]).
pub fn verify(apk: &Path, idsig: &Path) -> Result<VerifyReport, IdsigError> {
    verify_idsig(apk, &Idsig::load(idsig)?, idsig)
}

/// Checks `apk` against a parsed idsig (`idsig_path` names it in errors):
///
/// 1. the stored tree has the size the APK's length implies ([`IdsigError::SizeMismatch`]);
/// 2. the stored tree is consistent: the root hash is the hash of its top block, and every
///    upper level holds the hashes of the level below ([`IdsigError::TreeInconsistent`]);
/// 3. the tree recomputed from the APK has the same root; if not, the first 4 KiB data block
///    whose hash differs from the stored level 0 is named ([`IdsigError::BlockMismatch`]).
pub fn verify_idsig(
    apk: &Path,
    idsig: &Idsig,
    idsig_path: &Path,
) -> Result<VerifyReport, IdsigError> {
    let file = open_input(apk)?;
    let apk_len = input_len(&file, apk)?;
    let expected = tree_size(apk_len);
    let stored = &idsig.merkle_tree;
    if stored.len() as u64 != expected {
        return Err(IdsigError::SizeMismatch {
            apk: apk.to_path_buf(),
            idsig: idsig_path.to_path_buf(),
            apk_len,
            expected,
            actual: stored.len() as u64,
        });
    }
    let salt = &idsig.hashing_info.salt;
    let root = &idsig.hashing_info.raw_root_hash;
    check_tree(stored, apk_len, salt, root).map_err(|reason| IdsigError::TreeInconsistent {
        idsig: idsig_path.to_path_buf(),
        reason,
    })?;
    let computed = HashTree::from_file(&file, apk, apk_len, salt)?;
    if &computed.root_hash != root {
        let block = first_differing_block(computed.level0(), level0_of(stored, apk_len));
        return Err(IdsigError::BlockMismatch {
            apk: apk.to_path_buf(),
            idsig: idsig_path.to_path_buf(),
            block,
            offset: block * BLOCK_SIZE as u64,
        });
    }
    Ok(VerifyReport {
        apk_len,
        root_hash: computed.root_hash,
        tree_size: expected,
    })
}

/// Index of the first 32-byte hash that differs (0 when there is no level 0: the single
/// block is the one that differs).
fn first_differing_block(computed: &[u8], stored: &[u8]) -> u64 {
    computed
        .chunks(HASH_SIZE)
        .zip(stored.chunks(HASH_SIZE))
        .position(|(a, b)| a != b)
        .unwrap_or(0) as u64
}

/// The guest agent's check: the root hash of the first `len` bytes of the file or block
/// device at `path` must be `expected` (an idsig's `raw_root_hash`). A block device holding
/// the APK is zero-padded to 4 KiB; hashing its padded length gives the same root hash.
pub fn check_root_hash(
    path: &Path,
    len: u64,
    expected: &[u8; HASH_SIZE],
) -> Result<(), IdsigError> {
    let file = open_input(path)?;
    let actual = HashTree::from_file(&file, path, len, &[])?.root_hash;
    if &actual != expected {
        return Err(IdsigError::RootHashMismatch {
            path: path.to_path_buf(),
            len,
            actual: hex(&actual),
            expected: hex(expected),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::disk::testutil::{TempDir, pattern};
    use crate::payload::idsig::create::create_idsig_of_any_file as create_idsig;

    fn setup(dir: &TempDir, len: usize) -> (std::path::PathBuf, std::path::PathBuf) {
        let apk = dir.file("a.apk", &pattern(len, 1));
        let idsig = dir.path().join("a.idsig");
        create_idsig(&apk, &idsig).unwrap();
        (apk, idsig)
    }

    #[test]
    fn verifies_what_create_wrote() {
        let dir = TempDir::new("verify-ok");
        for len in [0, 1, 4096, 4097, 300 * 4096 + 5] {
            let (apk, idsig) = setup(&dir, len);
            let r = verify(&apk, &idsig).unwrap();
            assert_eq!(r.apk_len, len as u64);
            assert_eq!(r.tree_size, tree_size(len as u64));
            assert_eq!(
                r.root_hash,
                Idsig::load(&idsig).unwrap().hashing_info.raw_root_hash
            );
        }
    }

    #[test]
    fn names_the_block_that_differs() {
        let dir = TempDir::new("verify-block");
        for (len, flip, block) in [
            (300 * 4096 + 5, 3 * 4096 + 10, 3),
            (300 * 4096 + 5, 300 * 4096 + 4, 300),
            (300 * 4096 + 5, 0, 0),
            (2000, 1999, 0),
        ] {
            let (apk, idsig) = setup(&dir, len);
            let mut data = fs::read(&apk).unwrap();
            data[flip] ^= 0x80;
            fs::write(&apk, &data).unwrap();
            match verify(&apk, &idsig).unwrap_err() {
                IdsigError::BlockMismatch {
                    block: b, offset, ..
                } => assert_eq!((b, offset), (block, block * 4096), "flip {flip}"),
                e => panic!("{e}"),
            }
        }
    }

    #[test]
    fn size_mismatch_and_inconsistent_tree() {
        let dir = TempDir::new("verify-size");
        let (apk, idsig) = setup(&dir, 256 * 4096);
        // One byte more: level 0 needs a third block.
        let mut data = fs::read(&apk).unwrap();
        data.push(0);
        let bigger = dir.file("b.apk", &data);
        match verify(&bigger, &idsig).unwrap_err() {
            IdsigError::SizeMismatch {
                expected, actual, ..
            } => assert_eq!((expected, actual), (4 * 4096, 3 * 4096)),
            e => panic!("{e}"),
        }
        // A corrupt tree.
        let mut sig = Idsig::load(&idsig).unwrap();
        sig.merkle_tree[4096 + 64] ^= 1;
        let e = verify_idsig(&apk, &sig, &idsig).unwrap_err();
        assert!(matches!(e, IdsigError::TreeInconsistent { .. }), "{e}");
        // A root hash that is not the tree's.
        let mut sig = Idsig::load(&idsig).unwrap();
        sig.hashing_info.raw_root_hash[31] ^= 1;
        let e = verify_idsig(&apk, &sig, &idsig).unwrap_err();
        assert!(e.to_string().contains("root hash"), "{e}");
    }

    #[test]
    fn root_hash_of_a_padded_device_image() {
        let dir = TempDir::new("verify-root");
        let (apk, idsig) = setup(&dir, 10_000);
        let root = Idsig::load(&idsig).unwrap().hashing_info.raw_root_hash;
        let mut data = fs::read(&apk).unwrap();
        data.resize(12_288, 0);
        let dev = dir.file("dev.img", &data);
        check_root_hash(&dev, 10_000, &root).unwrap();
        check_root_hash(&dev, 12_288, &root).unwrap();
        match check_root_hash(&dev, 9_999, &root).unwrap_err() {
            IdsigError::RootHashMismatch { len, expected, .. } => {
                assert_eq!((len, expected), (9_999, hex(&root)))
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            check_root_hash(&dev, 20_000, &root).unwrap_err(),
            IdsigError::ShortFile { .. }
        ));
    }
}
