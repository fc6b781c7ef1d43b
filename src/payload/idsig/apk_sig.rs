//! The APK Signing Block and the content digest of its v3 (else v2) signer: what an idsig's
//! `apk_digest` and `signature_algorithm_id` carry (Android 14's `V4Signature::create`,
//! apkverify `v3.rs`; apksigner's v4 signer makes the same choice).
//!
//! The block sits right before the ZIP central directory:
//!
//! ```text
//! u64 size (of what follows), { u64 len, u32 id, value[len - 4] }*, u64 size, "APK Sig Block 42"
//! ```
//!
//! A v2 block (ID 0x7109871a) or v3 block (0xf05368c0) is a u32-length-prefixed sequence of
//! signers; every nested item is u32-length-prefixed too:
//!
//! ```text
//! v2 signer: signed_data, signatures, public_key
//! v3 signer: signed_data, u32 min_sdk, u32 max_sdk, signatures, public_key
//! signed_data: digests, certificates, [v3: u32 min_sdk, u32 max_sdk,] attributes
//! digest / signature: u32 signature_algorithm_id, bytes value
//! ```
//!
//! The signer is the only one, or (v3, several signers for SDK ranges) the one whose range
//! holds [`TARGET_SDK`]. Of its signatures, the strongest supported one is chosen (content
//! digest SHA-512 > verity SHA-256 > SHA-256; DSA is not supported), and the digest is copied
//! from the signed data, not recomputed. The v3.1 block (0x1b93ad61, key rotation for SDK 33+)
//! is not read.
//!
//! Everything is bounds-checked; the block is read whole only if at most
//! [`MAX_SIGNING_BLOCK_SIZE`] bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::IdsigError;
use super::hashtree::{input_len, open_input};

/// The APK Signing Block's magic, at its very end.
pub const SIGNING_BLOCK_MAGIC: &[u8; 16] = b"APK Sig Block 42";
/// APK Signature Scheme v2 block ID.
pub const V2_BLOCK_ID: u32 = 0x7109_871a;
/// APK Signature Scheme v3 block ID.
pub const V3_BLOCK_ID: u32 = 0xf053_68c0;
/// Largest signing block read (real ones are a few KiB: certificates, signatures, padding).
pub const MAX_SIGNING_BLOCK_SIZE: u64 = 16 << 20;
/// The platform SDK level used to choose among v3 signers with SDK ranges (Android 14).
pub const TARGET_SDK: u32 = 34;

const EOCD_MAGIC: u32 = 0x0605_4b50;
const EOCD_SIZE: usize = 22;
const ZIP64_LOCATOR_MAGIC: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_SIZE: u64 = 20;

/// The signer's content digest from an APK's signature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkDigest {
    /// 3 (from the v3 block) or 2 (from the v2 block).
    pub scheme: u8,
    pub signature_algorithm_id: u32,
    pub digest: Vec<u8>,
}

/// The content digest of the APK at `path`, from its v3 block, else its v2 block. `None` if
/// the file has no APK Signing Block (an unsigned or v1-only APK, or not a ZIP at all) or the
/// block has neither a v2 nor a v3 block; an error if what is there is malformed.
pub fn apk_digest(path: &Path) -> Result<Option<ApkDigest>, IdsigError> {
    let file = open_input(path)?;
    let len = input_len(&file, path)?;
    let Some((block, block_at)) = signing_block(&file, path, len)? else {
        return Ok(None);
    };
    let pairs = Pairs::parse(&block, block_at, path)?;
    if let Some((value, at)) = pairs.get(V3_BLOCK_ID) {
        return Ok(Some(digest_of(value, at, path, 3)?));
    }
    if let Some((value, at)) = pairs.get(V2_BLOCK_ID) {
        return Ok(Some(digest_of(value, at, path, 2)?));
    }
    Ok(None)
}

fn sig_err(path: &Path, what: &'static str, offset: u64, reason: String) -> IdsigError {
    IdsigError::ApkSignature {
        path: path.to_path_buf(),
        what,
        offset,
        reason,
    }
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), IdsigError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| IdsigError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        })
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// True when `file` (`len` bytes) is a ZIP: it ends with an End of Central Directory record
/// whose central directory ends where the record starts. An error for a ZIP64 or a
/// malformed record.
pub fn is_zip(file: &File, path: &Path, len: u64) -> Result<bool, IdsigError> {
    Ok(find_eocd(file, path, len)?.is_some())
}

/// Finds the End of Central Directory record: the last `PK\5\6` whose comment length reaches
/// exactly the end of the file. Returns (its offset, central directory offset).
fn find_eocd(file: &File, path: &Path, len: u64) -> Result<Option<(u64, u64)>, IdsigError> {
    if len < EOCD_SIZE as u64 {
        return Ok(None);
    }
    let tail_len = len.min((EOCD_SIZE + u16::MAX as usize) as u64);
    let tail_at = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    read_at(file, path, &mut tail, tail_at)?;
    for i in (0..=tail.len() - EOCD_SIZE).rev() {
        if le_u32(&tail, i) != Some(EOCD_MAGIC) {
            continue;
        }
        let comment = le_u16(&tail, i + 20).unwrap_or(u16::MAX) as usize;
        if i + EOCD_SIZE + comment != tail.len() {
            continue;
        }
        let eocd_at = tail_at + i as u64;
        let cd_size = u64::from(le_u32(&tail, i + 12).unwrap_or(0));
        let cd_at = u64::from(le_u32(&tail, i + 16).unwrap_or(0));
        if eocd_at >= ZIP64_LOCATOR_SIZE {
            let mut loc = [0u8; 4];
            read_at(file, path, &mut loc, eocd_at - ZIP64_LOCATOR_SIZE)?;
            if u32::from_le_bytes(loc) == ZIP64_LOCATOR_MAGIC {
                return Err(sig_err(
                    path,
                    "ZIP end of central directory",
                    eocd_at,
                    "ZIP64 APKs are not supported".into(),
                ));
            }
        }
        if cd_at.checked_add(cd_size) != Some(eocd_at) {
            return Err(sig_err(
                path,
                "ZIP end of central directory",
                eocd_at,
                format!(
                    "the central directory ({cd_size} bytes at {cd_at}) does not end where the \
                     end record starts"
                ),
            ));
        }
        return Ok(Some((eocd_at, cd_at)));
    }
    Ok(None)
}

/// The APK Signing Block (whole, with both size fields and the magic) and its offset.
fn signing_block(file: &File, path: &Path, len: u64) -> Result<Option<(Vec<u8>, u64)>, IdsigError> {
    let Some((_, cd_at)) = find_eocd(file, path, len)? else {
        return Ok(None);
    };
    let Some(footer_at) = cd_at.checked_sub(24) else {
        return Ok(None);
    };
    let mut footer = [0u8; 24];
    read_at(file, path, &mut footer, footer_at)?;
    if &footer[8..] != SIGNING_BLOCK_MAGIC {
        return Ok(None);
    }
    let what = "APK Signing Block";
    let size = le_u64(&footer, 0).unwrap_or(0);
    if !(24..=MAX_SIGNING_BLOCK_SIZE).contains(&size) {
        return Err(sig_err(
            path,
            what,
            footer_at,
            format!("size {size} is outside 24..={MAX_SIGNING_BLOCK_SIZE}"),
        ));
    }
    let Some(block_at) = cd_at.checked_sub(size + 8) else {
        return Err(sig_err(
            path,
            what,
            footer_at,
            format!("size {size} reaches before the start of the file"),
        ));
    };
    let mut block = vec![0u8; (size + 8) as usize];
    read_at(file, path, &mut block, block_at)?;
    let header = le_u64(&block, 0).unwrap_or(0);
    if header != size {
        return Err(sig_err(
            path,
            what,
            block_at,
            format!("size at the start ({header}) differs from size at the end ({size})"),
        ));
    }
    Ok(Some((block, block_at)))
}

/// The ID-value pairs of a signing block: (id, value range in the block).
struct Pairs<'a> {
    block: &'a [u8],
    block_at: u64,
    pairs: Vec<(u32, usize, usize)>,
}

impl<'a> Pairs<'a> {
    fn parse(block: &'a [u8], block_at: u64, path: &Path) -> Result<Pairs<'a>, IdsigError> {
        let end = block.len() - 24;
        let mut at = 8;
        let mut pairs = Vec::new();
        while at < end {
            let bad = |reason: String| {
                sig_err(path, "APK Signing Block pair", block_at + at as u64, reason)
            };
            let len = le_u64(&block[..end], at).ok_or_else(|| bad("truncated length".into()))?;
            let remaining = (end - at - 8) as u64;
            if len < 4 || len > remaining {
                return Err(bad(format!(
                    "length {len} is outside 4..={remaining} (what remains of the block)"
                )));
            }
            let id = le_u32(block, at + 8).unwrap_or(0);
            let value_at = at + 12;
            let value_end = at + 8 + len as usize;
            pairs.push((id, value_at, value_end));
            at = value_end;
        }
        Ok(Pairs {
            block,
            block_at,
            pairs,
        })
    }

    /// The first value with `id`, and its file offset.
    fn get(&self, id: u32) -> Option<(&'a [u8], u64)> {
        let &(_, start, end) = self.pairs.iter().find(|(i, _, _)| *i == id)?;
        Some((self.block.get(start..end)?, self.block_at + start as u64))
    }
}

/// A reader of u32-length-prefixed items inside a signature scheme block.
struct Seq<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    at: u64,
    path: &'a Path,
    what: &'static str,
}

impl<'a> Seq<'a> {
    fn err(&self, reason: String) -> IdsigError {
        sig_err(self.path, self.what, self.at + self.pos as u64, reason)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn u32(&mut self, field: &str) -> Result<u32, IdsigError> {
        let v =
            le_u32(self.buf, self.pos).ok_or_else(|| self.err(format!("{field}: truncated")))?;
        self.pos += 4;
        Ok(v)
    }

    /// A u32 length and that many bytes, as a nested sequence.
    fn item(&mut self, what: &'static str) -> Result<Seq<'a>, IdsigError> {
        let len = self.u32(what)? as usize;
        let rest = self.buf.len() - self.pos;
        if len > rest {
            self.pos -= 4;
            return Err(self.err(format!(
                "{what}: length {len} is larger than the {rest} bytes that remain"
            )));
        }
        let item = Seq {
            buf: &self.buf[self.pos..self.pos + len],
            pos: 0,
            at: self.at + self.pos as u64,
            path: self.path,
            what,
        };
        self.pos += len;
        Ok(item)
    }

    /// The items of a length-prefixed sequence.
    fn items(mut self, what: &'static str) -> Result<Vec<Seq<'a>>, IdsigError> {
        let mut out = Vec::new();
        while !self.is_empty() {
            out.push(self.item(what)?);
        }
        Ok(out)
    }
}

/// One signer: (min_sdk, max_sdk, signature algorithm IDs, digests by algorithm ID).
struct Signer<'a> {
    sdk: (u32, u32),
    signatures: Vec<u32>,
    digests: Vec<(u32, Seq<'a>)>,
}

fn parse_signer<'a>(mut s: Seq<'a>, scheme: u8) -> Result<Signer<'a>, IdsigError> {
    let mut signed = s.item("signed data")?;
    let mut sdk = (0, u32::MAX);
    if scheme == 3 {
        sdk = (s.u32("signer min_sdk")?, s.u32("signer max_sdk")?);
    }
    let signatures = s
        .item("signatures")?
        .items("signature")?
        .into_iter()
        .map(|mut sig| sig.u32("signature algorithm id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut digests = Vec::new();
    for mut d in signed.item("digests")?.items("digest")? {
        let id = d.u32("digest algorithm id")?;
        let value = d.item("digest value")?;
        digests.push((id, value));
    }
    Ok(Signer {
        sdk,
        signatures,
        digests,
    })
}

/// Rank of the content digest a signature algorithm uses (higher is stronger); `None` for
/// algorithms Android does not accept here (DSA, unknown IDs).
fn digest_rank(algorithm: u32) -> Option<u8> {
    match algorithm {
        0x0101 | 0x0103 | 0x0201 => Some(1), // chunked SHA-256
        0x0421 | 0x0423 => Some(2),          // verity chunked SHA-256
        0x0102 | 0x0104 | 0x0202 => Some(3), // chunked SHA-512
        _ => None,
    }
}

/// The chosen signer's strongest digest in a v2 (`scheme` 2) or v3 block value.
fn digest_of(value: &[u8], at: u64, path: &Path, scheme: u8) -> Result<ApkDigest, IdsigError> {
    let what = if scheme == 3 {
        "v3 signature block"
    } else {
        "v2 signature block"
    };
    let mut top = Seq {
        buf: value,
        pos: 0,
        at,
        path,
        what,
    };
    let signers = top.item("signers")?.items("signer")?;
    let signers: Vec<Signer<'_>> = signers
        .into_iter()
        .map(|s| parse_signer(s, scheme))
        .collect::<Result<_, _>>()?;
    let chosen: Vec<&Signer<'_>> = if signers.len() == 1 {
        signers.iter().collect()
    } else {
        signers
            .iter()
            .filter(|s| s.sdk.0 <= TARGET_SDK && TARGET_SDK <= s.sdk.1)
            .collect()
    };
    let [signer] = chosen.as_slice() else {
        return Err(sig_err(
            path,
            what,
            at,
            format!(
                "{} signers, {} of them for SDK {TARGET_SDK}: need exactly one",
                signers.len(),
                chosen.len()
            ),
        ));
    };
    let best = signer
        .signatures
        .iter()
        .filter_map(|&id| Some((digest_rank(id)?, id)))
        .fold(None, |best: Option<(u8, u32)>, cur| match best {
            Some(b) if b.0 >= cur.0 => Some(b),
            _ => Some(cur),
        });
    let Some((_, algorithm)) = best else {
        return Err(sig_err(
            path,
            what,
            at,
            format!(
                "the signer has no supported signature (algorithms {:#06x?})",
                signer.signatures
            ),
        ));
    };
    let Some((_, digest)) = signer.digests.iter().find(|(id, _)| *id == algorithm) else {
        return Err(sig_err(
            path,
            what,
            at,
            format!("the signed data has no digest for algorithm {algorithm:#06x}"),
        ));
    };
    Ok(ApkDigest {
        scheme,
        signature_algorithm_id: algorithm,
        digest: digest.buf.to_vec(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    pub(crate) fn lp(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        lp(&items.iter().flat_map(|i| lp(i)).collect::<Vec<u8>>())
    }

    fn alg_value(alg: u32, value: &[u8]) -> Vec<u8> {
        let mut v = alg.to_le_bytes().to_vec();
        v.extend(lp(value));
        v
    }

    /// A signer: digests as (algorithm, digest); signatures name the same algorithms.
    pub(crate) fn signer(scheme: u8, digests: &[(u32, Vec<u8>)], sdk: (u32, u32)) -> Vec<u8> {
        let d: Vec<Vec<u8>> = digests.iter().map(|(a, d)| alg_value(*a, d)).collect();
        let mut signed = seq(&d);
        signed.extend(seq(&[b"cert".to_vec()]));
        if scheme == 3 {
            signed.extend(sdk.0.to_le_bytes());
            signed.extend(sdk.1.to_le_bytes());
        }
        signed.extend(seq(&[]));
        let mut s = lp(&signed);
        if scheme == 3 {
            s.extend(sdk.0.to_le_bytes());
            s.extend(sdk.1.to_le_bytes());
        }
        let sigs: Vec<Vec<u8>> = digests.iter().map(|(a, _)| alg_value(*a, b"sig")).collect();
        s.extend(seq(&sigs));
        s.extend(lp(b"public key"));
        s
    }

    /// A zip-like file: `data`, a signing block with `pairs`, a 46-byte central directory, the
    /// end record.
    pub(crate) fn apk(data: &[u8], pairs: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = data.to_vec();
        if !pairs.is_empty() {
            let mut body = Vec::new();
            for (id, value) in pairs {
                body.extend((value.len() as u64 + 4).to_le_bytes());
                body.extend(id.to_le_bytes());
                body.extend(value);
            }
            let size = (body.len() + 24) as u64;
            out.extend(size.to_le_bytes());
            out.extend(body);
            out.extend(size.to_le_bytes());
            out.extend(SIGNING_BLOCK_MAGIC);
        }
        let cd_at = out.len() as u32;
        out.extend([0x50, 0x4b, 1, 2]);
        out.extend([0u8; 42]);
        out.extend(EOCD_MAGIC.to_le_bytes());
        out.extend([0u8; 8]);
        out.extend(46u32.to_le_bytes());
        out.extend(cd_at.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    fn digest(dir: &TempDir, bytes: &[u8]) -> Result<Option<ApkDigest>, IdsigError> {
        apk_digest(&dir.file("a.apk", bytes))
    }

    fn reason(e: IdsigError) -> String {
        match e {
            IdsigError::ApkSignature { what, reason, .. } => format!("{what}: {reason}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn v3_preferred_over_v2_and_strongest_digest_chosen() {
        let dir = TempDir::new("apksig");
        let v2 = seq(&[signer(2, &[(0x0103, vec![2; 32])], (0, 0))]);
        let v3 = seq(&[signer(
            3,
            &[
                (0x0103, vec![3; 32]),
                (0x0104, vec![4; 64]),
                (0x0423, vec![5; 32]),
            ],
            (28, u32::MAX),
        )]);
        let d = digest(
            &dir,
            &apk(b"data", &[(V2_BLOCK_ID, v2.clone()), (V3_BLOCK_ID, v3)]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            d,
            ApkDigest {
                scheme: 3,
                signature_algorithm_id: 0x0104,
                digest: vec![4; 64]
            }
        );
        let d = digest(
            &dir,
            &apk(b"data", &[(0x4272_6577, vec![0; 100]), (V2_BLOCK_ID, v2)]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (d.scheme, d.signature_algorithm_id, d.digest),
            (2, 0x0103, vec![2; 32])
        );
    }

    #[test]
    fn v3_signer_chosen_by_sdk_range_and_dsa_ignored() {
        let dir = TempDir::new("apksig-sdk");
        let v3 = seq(&[
            signer(3, &[(0x0201, vec![1; 32])], (24, 32)),
            signer(
                3,
                &[(0x0301, vec![9; 32]), (0x0201, vec![2; 32])],
                (33, u32::MAX),
            ),
        ]);
        let d = digest(&dir, &apk(b"", &[(V3_BLOCK_ID, v3)]))
            .unwrap()
            .unwrap();
        assert_eq!((d.signature_algorithm_id, d.digest), (0x0201, vec![2; 32]));
        // Two signers for the same SDK: ambiguous.
        let v3 = seq(&[
            signer(3, &[(0x0201, vec![1; 32])], (24, u32::MAX)),
            signer(3, &[(0x0201, vec![2; 32])], (33, u32::MAX)),
        ]);
        let e = reason(digest(&dir, &apk(b"", &[(V3_BLOCK_ID, v3)])).unwrap_err());
        assert!(e.contains("need exactly one"), "{e}");
        // Only DSA: nothing supported.
        let v3 = seq(&[signer(3, &[(0x0301, vec![1; 32])], (24, u32::MAX))]);
        let e = reason(digest(&dir, &apk(b"", &[(V3_BLOCK_ID, v3)])).unwrap_err());
        assert!(e.contains("no supported signature"), "{e}");
    }

    #[test]
    fn unsigned_or_not_a_zip_has_no_digest() {
        let dir = TempDir::new("apksig-none");
        assert_eq!(digest(&dir, b"").unwrap(), None);
        assert_eq!(digest(&dir, &[0x50; 10000]).unwrap(), None);
        assert_eq!(digest(&dir, &apk(&[1; 5000], &[])).unwrap(), None);
        // A signing block with neither v2 nor v3.
        assert_eq!(
            digest(&dir, &apk(b"x", &[(0x4272_6577, vec![0; 8])])).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let dir = TempDir::new("apksig-bad");
        let good = apk(
            b"data",
            &[(
                V3_BLOCK_ID,
                seq(&[signer(3, &[(0x0103, vec![3; 32])], (28, u32::MAX))]),
            )],
        );
        assert!(digest(&dir, &good).unwrap().is_some());
        let block_at = 4;
        let cd_at = good.len() - 22 - 46;
        // Footer size u32::MAX-ish / larger than the cap / smaller than 24.
        for size in [u64::MAX, MAX_SIGNING_BLOCK_SIZE + 1, 3] {
            let mut b = good.clone();
            b[cd_at - 24..cd_at - 16].copy_from_slice(&size.to_le_bytes());
            let e = reason(digest(&dir, &b).unwrap_err());
            assert!(e.contains("outside"), "{e}");
        }
        // Size reaching before the file start.
        let mut b = good.clone();
        b[cd_at - 24..cd_at - 16].copy_from_slice(&(cd_at as u64).to_le_bytes());
        assert!(reason(digest(&dir, &b).unwrap_err()).contains("before the start"));
        // Header and footer disagree.
        let mut b = good.clone();
        b[block_at] ^= 1;
        assert!(reason(digest(&dir, &b).unwrap_err()).contains("differs"));
        // A pair length past the block, and one of u64::MAX.
        for len in [10_000u64, u64::MAX, 2] {
            let mut b = good.clone();
            b[block_at + 8..block_at + 16].copy_from_slice(&len.to_le_bytes());
            assert!(reason(digest(&dir, &b).unwrap_err()).contains("outside"));
        }
        // Every u32 length inside the v3 value set to u32::MAX, one at a time: an error or
        // (if the field is not a length) a different outcome, never a panic.
        let value_at = block_at + 8 + 12;
        for at in value_at..cd_at - 24 - 4 {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            let _ = digest(&dir, &b);
        }
        // Truncated v3 value: every shorter value, with the pair length adjusted.
        let value_len = cd_at - 24 - value_at;
        for cut in 1..value_len {
            let v3 = good[value_at..value_at + value_len - cut].to_vec();
            let b = apk(b"data", &[(V3_BLOCK_ID, v3)]);
            assert!(digest(&dir, &b).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn zip64_and_inconsistent_end_record_are_errors() {
        let dir = TempDir::new("apksig-zip64");
        let good = apk(b"data", &[]);
        let eocd = good.len() - 22;
        let mut b = good.clone();
        b[eocd - 20..eocd - 16].copy_from_slice(&ZIP64_LOCATOR_MAGIC.to_le_bytes());
        assert!(reason(digest(&dir, &b).unwrap_err()).contains("ZIP64"));
        let mut b = good.clone();
        b[eocd + 16..eocd + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(reason(digest(&dir, &b).unwrap_err()).contains("does not end"));
    }
}
