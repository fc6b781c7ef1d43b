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
const READ_CHUNK: usize = 1 << 20;
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
    let mut buf = vec![0u8; READ_CHUNK];
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
