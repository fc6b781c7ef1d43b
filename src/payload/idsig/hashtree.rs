//! The fs-verity style Merkle tree an idsig carries (AVF `libs/idsig/src/hashtree.rs`).
//!
//! - The input is split into 4096-byte blocks, the last one zero-padded; each block is hashed
//!   with SHA-256 (level 0).
//! - Each level's hashes are zero-padded to a multiple of 4096 bytes; the next level hashes the
//!   previous one in 4096-byte blocks, until a level fits in one block.
//! - The tree is stored top level first, level 0 last, each level at its padded size.
//! - Root hash: the hash of the first 4096 bytes of the stored tree, or (no tree: input of at
//!   most 4096 bytes, including an empty one) the hash of the zero-padded input block.
//! - A non-empty salt is zero-padded to a multiple of 64 bytes (SHA-256's block) and hashed in
//!   front of every block. APKs use no salt.
//!
//! Zero-padding the input up to the next 4096-byte boundary changes nothing: the last block
//! is padded with zeros anyway. That is why a block device holding an APK (padded to 4 KiB)
//! has the APK's root hash when hashed over the APK's length or the padded length.
//!
//! Level 0 is hashed by [`std::thread::available_parallelism`] threads, each reading its own
//! range with positional reads into a fixed buffer; upper levels (1/128 of the work) follow.
//! Memory: the tree (32 bytes per 4 KiB of input) plus one buffer per thread.

use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::IdsigError;
use super::format::MAX_TREE_SIZE;

/// Tree and data block size.
pub const BLOCK_SIZE: usize = 4096;
/// SHA-256 digest size.
pub const HASH_SIZE: usize = 32;
/// SHA-256's input block size: a salt is padded to a multiple of it.
const SHA256_BLOCK: usize = 64;
/// Bytes each thread reads at a time.
const READ_CHUNK: usize = 256 << 10;
/// Fewer data blocks than this per thread are not worth a thread.
const MIN_BLOCKS_PER_THREAD: u64 = 1024;

/// A Merkle tree and its root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    /// Bytes of input the tree covers.
    pub data_len: u64,
    pub root_hash: [u8; HASH_SIZE],
    /// All levels, top first (empty when `data_len <= 4096`).
    pub tree: Vec<u8>,
}

/// Padded byte sizes of the levels for `data_len` bytes of input, level 0 first.
pub fn level_sizes(data_len: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut n = data_len;
    while n > BLOCK_SIZE as u64 {
        let blocks = n.div_ceil(BLOCK_SIZE as u64);
        let size = (blocks * HASH_SIZE as u64).next_multiple_of(BLOCK_SIZE as u64);
        sizes.push(size);
        n = size;
    }
    sizes
}

/// Size of the stored tree for `data_len` bytes of input.
pub fn tree_size(data_len: u64) -> u64 {
    level_sizes(data_len).iter().sum()
}

/// A SHA-256 state that has already absorbed the padded salt.
fn salted(salt: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    if !salt.is_empty() {
        let mut padded = salt.to_vec();
        padded.resize(salt.len().next_multiple_of(SHA256_BLOCK), 0);
        h.update(&padded);
    }
    h
}

/// Hash of one block (zero-padded to 4096 bytes if shorter) into `out`.
fn hash_block(seed: &Sha256, block: &[u8], out: &mut [u8]) {
    let mut h = seed.clone();
    h.update(block);
    if block.len() < BLOCK_SIZE {
        h.update(&[0u8; BLOCK_SIZE][block.len()..]);
    }
    out.copy_from_slice(&h.finalize());
}

/// Hashes whole `data` blocks into `out` (32 bytes per block; `data.len()` a multiple of
/// 4096 except possibly for the last block).
fn hash_blocks(seed: &Sha256, data: &[u8], out: &mut [u8]) {
    for (block, o) in data.chunks(BLOCK_SIZE).zip(out.chunks_exact_mut(HASH_SIZE)) {
        hash_block(seed, block, o);
    }
}

impl HashTree {
    /// The tree over bytes in memory (one thread).
    pub fn from_bytes(data: &[u8], salt: &[u8]) -> HashTree {
        let seed = salted(salt);
        let Ok(tree) = Self::build(data.len() as u64, &seed, |level0| {
            hash_blocks(&seed, data, level0);
            Ok::<(), Infallible>(())
        });
        tree
    }

    /// The tree over the first `len` bytes of `file` (a regular file or a block device, which
    /// may be longer); `path` names it in errors. A file shorter than `len` is an error, and
    /// so is a tree larger than [`MAX_TREE_SIZE`].
    pub fn from_file(
        file: &File,
        path: &Path,
        len: u64,
        salt: &[u8],
    ) -> Result<HashTree, IdsigError> {
        let size = tree_size(len);
        if size > MAX_TREE_SIZE as u64 {
            return Err(IdsigError::TooLarge {
                what: format!("Merkle tree of {path:?} ({len} bytes)"),
                len: size,
                max: MAX_TREE_SIZE as u64,
            });
        }
        let seed = salted(salt);
        let blocks = len.div_ceil(BLOCK_SIZE as u64);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get() as u64)
            .min(blocks / MIN_BLOCKS_PER_THREAD)
            .max(1);
        Self::build(len, &seed, |level0| {
            if threads == 1 {
                return hash_range(file, path, len, 0, level0, &seed);
            }
            let per_thread = blocks.div_ceil(threads) as usize;
            std::thread::scope(|s| {
                let workers: Vec<_> = level0
                    .chunks_mut(per_thread * HASH_SIZE)
                    .enumerate()
                    .map(|(i, out)| {
                        let first = (i * per_thread) as u64;
                        let seed = &seed;
                        s.spawn(move || hash_range(file, path, len, first, out, seed))
                    })
                    .collect();
                workers.into_iter().try_for_each(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            })
        })
    }

    /// Level 0 of the stored tree (the data blocks' hashes, padded), or an empty slice when
    /// there is no tree.
    pub fn level0(&self) -> &[u8] {
        level0_of(&self.tree, self.data_len)
    }

    /// Allocates the tree, lets `fill_level0` write the level-0 hashes (32 bytes per data
    /// block, into a zeroed slice of exactly that size), then hashes the upper levels and
    /// the root.
    fn build<E>(
        data_len: u64,
        seed: &Sha256,
        fill_level0: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<HashTree, E> {
        let sizes = level_sizes(data_len);
        let mut root_hash = [0u8; HASH_SIZE];
        if sizes.is_empty() {
            // At most one block: the root is that block's hash (a zero block if empty).
            if data_len == 0 {
                hash_block(seed, &[], &mut root_hash);
            } else {
                fill_level0(&mut root_hash)?;
            }
            return Ok(HashTree {
                data_len,
                root_hash,
                tree: Vec::new(),
            });
        }
        let total: usize = sizes.iter().map(|&s| s as usize).sum();
        let mut tree = vec![0u8; total];
        // Level i starts after the levels above it (i + 1 ..).
        let starts: Vec<usize> = (0..sizes.len())
            .map(|i| sizes[i + 1..].iter().map(|&s| s as usize).sum())
            .collect();
        let data_blocks = data_len.div_ceil(BLOCK_SIZE as u64) as usize;
        fill_level0(&mut tree[starts[0]..starts[0] + data_blocks * HASH_SIZE])?;
        for i in 1..sizes.len() {
            // Level i lies before level i - 1.
            let (upper, lower) = tree.split_at_mut(starts[i - 1]);
            hash_blocks(
                seed,
                &lower[..sizes[i - 1] as usize],
                &mut upper[starts[i]..],
            );
        }
        hash_block(seed, &tree[..BLOCK_SIZE], &mut root_hash);
        Ok(HashTree {
            data_len,
            root_hash,
            tree,
        })
    }
}

/// Level 0 (padded) of a stored tree for `data_len` bytes of input; empty if the tree is
/// shorter than it should be.
pub fn level0_of(tree: &[u8], data_len: u64) -> &[u8] {
    let size = level_sizes(data_len).first().copied().unwrap_or(0) as usize;
    tree.len()
        .checked_sub(size)
        .and_then(|start| tree.get(start..))
        .unwrap_or_default()
}

/// Checks a stored tree against itself and a root hash: the root is the hash of the top
/// block, and each upper level holds the hashes of the level below. Returns what is wrong.
pub fn check_tree(
    tree: &[u8],
    data_len: u64,
    salt: &[u8],
    root_hash: &[u8; HASH_SIZE],
) -> Result<(), String> {
    let sizes = level_sizes(data_len);
    let total: u64 = sizes.iter().sum();
    if tree.len() as u64 != total {
        return Err(format!(
            "{} bytes, but {data_len} bytes of data need {total}",
            tree.len()
        ));
    }
    let Some(top) = tree.get(..BLOCK_SIZE) else {
        return Ok(()); // no tree: the root is checked against the data
    };
    let seed = salted(salt);
    let mut hash = [0u8; HASH_SIZE];
    hash_block(&seed, top, &mut hash);
    if &hash != root_hash {
        return Err(format!(
            "the root hash {} is not the hash of the top level ({})",
            super::hex(root_hash),
            super::hex(&hash)
        ));
    }
    let mut end = tree.len();
    let mut levels = Vec::new(); // (start, size), level 0 first
    for &size in &sizes {
        levels.push((end - size as usize, size as usize));
        end -= size as usize;
    }
    for i in 1..levels.len() {
        let (lower_at, lower_len) = levels[i - 1];
        let (upper_at, _) = levels[i];
        let lower = &tree[lower_at..lower_at + lower_len];
        for (j, block) in lower.chunks(BLOCK_SIZE).enumerate() {
            hash_block(&seed, block, &mut hash);
            let at = upper_at + j * HASH_SIZE;
            if tree.get(at..at + HASH_SIZE) != Some(&hash[..]) {
                return Err(format!(
                    "level {i} hash {j} (tree offset {at}) is not the hash of level {} block {j}",
                    i - 1
                ));
            }
        }
    }
    Ok(())
}

/// Hashes data blocks `first ..` of `file` into `out` (32 bytes per block), reading
/// [`READ_CHUNK`] bytes at a time; the data ends at `len`.
fn hash_range(
    file: &File,
    path: &Path,
    len: u64,
    first: u64,
    out: &mut [u8],
    seed: &Sha256,
) -> Result<(), IdsigError> {
    const BLOCKS_PER_CHUNK: usize = READ_CHUNK / BLOCK_SIZE;
    // Page-aligned: the kernel's copy from the page cache is several times slower into a
    // buffer misaligned against it (malloc's large blocks start 16 bytes into a page).
    let mut storage = vec![0u8; READ_CHUNK + BLOCK_SIZE];
    let align = storage.as_ptr().align_offset(BLOCK_SIZE).min(BLOCK_SIZE);
    let buf = &mut storage[align..align + READ_CHUNK];
    for (i, hashes) in out.chunks_mut(BLOCKS_PER_CHUNK * HASH_SIZE).enumerate() {
        let offset = (first + (i * BLOCKS_PER_CHUNK) as u64) * BLOCK_SIZE as u64;
        let want = ((hashes.len() / HASH_SIZE) * BLOCK_SIZE) as u64;
        let n = want.min(len.saturating_sub(offset)) as usize;
        let data = &mut buf[..n];
        file.read_exact_at(data, offset).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                IdsigError::ShortFile {
                    path: path.to_path_buf(),
                    offset,
                    expected: len,
                }
            } else {
                IdsigError::Read {
                    path: path.to_path_buf(),
                    offset,
                    source,
                }
            }
        })?;
        hash_blocks(seed, data, hashes);
    }
    Ok(())
}

/// Root hash of the first `len` bytes of the file or block device at `path`.
pub fn root_hash_of_file(path: &Path, len: u64) -> Result<[u8; HASH_SIZE], IdsigError> {
    let file = open_input(path)?;
    Ok(HashTree::from_file(&file, path, len, &[])?.root_hash)
}

/// Opens a regular file or block device for reading.
pub(crate) fn open_input(path: &Path) -> Result<File, IdsigError> {
    let open_err = |source| IdsigError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let ft = file.metadata().map_err(open_err)?.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        return Err(IdsigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// Byte length of an open regular file or block device.
pub(crate) fn input_len(file: &File, path: &Path) -> Result<u64, IdsigError> {
    let mut f = file;
    f.seek(SeekFrom::End(0)).map_err(|source| IdsigError::Read {
        path: path.to_path_buf(),
        offset: 0,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::{TempDir, pattern};
    use crate::payload::idsig::hex;

    const B: u64 = BLOCK_SIZE as u64;

    /// The tree written the obvious way (levels as vectors), for comparison.
    fn naive(data: &[u8], salt: &[u8]) -> ([u8; 32], Vec<u8>) {
        let mut padded_salt = salt.to_vec();
        padded_salt.resize(salt.len().div_ceil(64) * 64, 0);
        let h = |block: &[u8]| -> [u8; 32] {
            let mut b = block.to_vec();
            b.resize(BLOCK_SIZE, 0);
            let mut s = Sha256::new();
            s.update(&padded_salt);
            s.update(&b);
            s.finalize().into()
        };
        if data.len() <= BLOCK_SIZE {
            return (h(data), Vec::new());
        }
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut cur = data.to_vec();
        loop {
            let mut next: Vec<u8> = cur.chunks(BLOCK_SIZE).flat_map(h).collect();
            next.resize(next.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
            levels.push(next.clone());
            if next.len() <= BLOCK_SIZE {
                break;
            }
            cur = next;
        }
        let tree: Vec<u8> = levels.into_iter().rev().flatten().collect();
        (h(&tree[..BLOCK_SIZE]), tree)
    }

    #[test]
    fn level_sizes_at_the_boundaries() {
        assert!(level_sizes(0).is_empty());
        assert!(level_sizes(1).is_empty());
        assert!(level_sizes(B).is_empty());
        assert_eq!(level_sizes(B + 1), [B]);
        assert_eq!(level_sizes(128 * B), [B]);
        assert_eq!(level_sizes(128 * B + 1), [2 * B, B]);
        assert_eq!(level_sizes(128 * 128 * B), [128 * B, B]);
        assert_eq!(level_sizes(128 * 128 * B + 1), [129 * B, 2 * B, B]);
        // 1 GiB: 8 MiB of level 0, 64 KiB, one block.
        assert_eq!(level_sizes(1 << 30), [8 << 20, 64 << 10, B]);
        assert_eq!(tree_size(1 << 30), (8 << 20) + (64 << 10) + B);
    }

    #[test]
    fn known_roots() {
        // Empty input: the hash of a zero block (AVF), with no tree.
        let t = HashTree::from_bytes(&[], &[]);
        assert_eq!(
            hex(&t.root_hash),
            "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"
        );
        assert!(t.tree.is_empty());
        // 4096 zero bytes: the same root.
        assert_eq!(HashTree::from_bytes(&[0; 4096], &[]).root_hash, t.root_hash);
        // Two blocks (computed with Python's hashlib).
        let t = HashTree::from_bytes(&pattern(5000, 3), &[]);
        assert_eq!(
            hex(&t.root_hash),
            "6e1579a6ee4d9fb21e1e3c7db70b794c00a9aa0ea2a079d385142a41db2479ab"
        );
        assert_eq!(t.tree.len(), BLOCK_SIZE);
    }

    #[test]
    fn matches_the_naive_tree_at_level_boundaries() {
        let sizes = [
            0,
            1,
            4095,
            4096,
            4097,
            8192,
            128 * 4096 - 1,
            128 * 4096,
            128 * 4096 + 1,
            129 * 4096 + 77,
        ];
        for salt in [&b""[..], b"salt", &[7u8; 64], &[9u8; 32]] {
            for len in sizes {
                let data = pattern(len, len as u8);
                let t = HashTree::from_bytes(&data, salt);
                let (root, tree) = naive(&data, salt);
                assert_eq!(t.root_hash, root, "len {len} salt {salt:?}");
                assert_eq!(t.tree, tree, "len {len} salt {salt:?}");
                assert_eq!(t.tree.len() as u64, tree_size(len as u64));
                assert!(check_tree(&t.tree, len as u64, salt, &t.root_hash).is_ok());
            }
        }
    }

    #[test]
    fn salt_changes_the_root() {
        let data = pattern(10000, 1);
        assert_ne!(
            HashTree::from_bytes(&data, b"a").root_hash,
            HashTree::from_bytes(&data, &[]).root_hash
        );
    }

    #[test]
    fn file_matches_memory_single_and_multi_threaded() {
        let dir = TempDir::new("hashtree");
        // 2500 blocks: two threads on this machine (at least 1024 blocks each), an odd tail.
        for len in [0, 4096, 4097, 128 * 4096 + 1, 2500 * 4096 + 123] {
            let data = pattern(len, 5);
            let path = dir.file("data", &data);
            let file = File::open(&path).unwrap();
            let t = HashTree::from_file(&file, &path, len as u64, &[]).unwrap();
            assert_eq!(t, HashTree::from_bytes(&data, &[]), "len {len}");
            assert_eq!(root_hash_of_file(&path, len as u64).unwrap(), t.root_hash);
        }
    }

    #[test]
    fn zero_padding_to_the_block_keeps_the_root() {
        let dir = TempDir::new("hashtree-pad");
        for len in [1usize, 4095, 5000, 128 * 4096 + 1] {
            let mut data = pattern(len, 9);
            let root = HashTree::from_bytes(&data, &[]).root_hash;
            data.resize(len.next_multiple_of(BLOCK_SIZE), 0);
            let path = dir.file("padded", &data);
            // Hashing the padded length or the original length of the padded file: same root.
            assert_eq!(root_hash_of_file(&path, data.len() as u64).unwrap(), root);
            assert_eq!(root_hash_of_file(&path, len as u64).unwrap(), root);
            // One more zero block does change it.
            data.resize(data.len() + BLOCK_SIZE, 0);
            assert_ne!(HashTree::from_bytes(&data, &[]).root_hash, root);
        }
    }

    #[test]
    fn short_file_is_an_error() {
        let dir = TempDir::new("hashtree-short");
        let path = dir.file("short", &pattern(10000, 1));
        let file = File::open(&path).unwrap();
        match HashTree::from_file(&file, &path, 20000, &[]).unwrap_err() {
            IdsigError::ShortFile { expected, .. } => assert_eq!(expected, 20000),
            e => panic!("{e}"),
        }
        // A file longer than the length: only the length is hashed.
        let t = HashTree::from_file(&file, &path, 4096, &[]).unwrap();
        assert_eq!(
            t.root_hash,
            HashTree::from_bytes(&pattern(4096, 1), &[]).root_hash
        );
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let dir = TempDir::new("hashtree-huge");
        let path = dir.file("small", b"x");
        let file = File::open(&path).unwrap();
        match HashTree::from_file(&file, &path, u64::MAX, &[]).unwrap_err() {
            IdsigError::TooLarge { max, .. } => assert_eq!(max, MAX_TREE_SIZE as u64),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn check_tree_finds_inconsistencies() {
        let len = 200 * 4096; // two levels
        let t = HashTree::from_bytes(&pattern(len, 2), &[]);
        let len = len as u64;
        assert!(check_tree(&t.tree, len, &[], &t.root_hash).is_ok());
        let mut bad_root = t.root_hash;
        bad_root[0] ^= 1;
        assert!(
            check_tree(&t.tree, len, &[], &bad_root)
                .unwrap_err()
                .contains("root hash")
        );
        let mut tree = t.tree.clone();
        tree[BLOCK_SIZE + 5 * 32] ^= 1; // level 0, hash 5
        let e = check_tree(&tree, len, &[], &t.root_hash).unwrap_err();
        assert!(e.contains("level 1 hash 0"), "{e}");
        assert!(
            check_tree(&t.tree[..BLOCK_SIZE], len, &[], &t.root_hash)
                .unwrap_err()
                .contains("need")
        );
    }
}
