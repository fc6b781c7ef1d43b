//! Test helpers: zips built with the zip crate, zips built byte by byte (for entries the
//! writer refuses to make: hostile names, lying sizes, unknown methods), and a deflate
//! stream of zeros of any length built without compressing anything.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

pub use crate::disk::testutil::TempDir;

/// A zip with deflated files `(name, data)`.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(
            *name,
            SimpleFileOptions::default().compression_method(CompressionMethod::Deflated),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// One entry of [`raw_zip`].
pub struct RawEntry {
    pub name: Vec<u8>,
    /// Compression method (0 stored, 8 deflate).
    pub method: u16,
    pub crc: u32,
    /// The data as stored (compressed for method 8).
    pub data: Vec<u8>,
    /// The uncompressed size the headers declare.
    pub size: u32,
    /// Unix mode (type and permission bits); 0 for none.
    pub mode: u32,
}

impl RawEntry {
    /// A stored file with a correct CRC.
    pub fn stored(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            method: 0,
            crc: crc32fast::hash(data),
            data: data.to_vec(),
            size: data.len() as u32,
            mode: 0o100644,
        }
    }
}

/// A zip written byte by byte from `entries`, exactly as given.
pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let csize = e.data.len() as u32;
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // time, date
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&csize.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.data);
        // Central directory header.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&0x031eu16.to_le_bytes()); // made by Unix, 3.0
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&e.crc.to_le_bytes());
        central.extend_from_slice(&csize.to_le_bytes());
        central.extend_from_slice(&e.size.to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        central.extend_from_slice(&(e.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A raw deflate stream (one fixed-Huffman block) that inflates to `len` zero bytes: a
/// literal 0, then matches of 258 bytes at distance 1 (13 bits each, so about 1/160 of `len`),
/// then literals for the rest.
pub fn deflate_zeros(len: u64) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(1, 1); // BFINAL
    w.bits(1, 2); // BTYPE = fixed Huffman
    let mut left = len;
    if left > 0 {
        w.huffman(0x30, 8); // literal 0
        left -= 1;
    }
    while left >= 258 {
        w.huffman(0xc5, 8); // length code 285 (258 bytes)
        w.huffman(0, 5); // distance code 0 (distance 1)
        left -= 258;
    }
    for _ in 0..left {
        w.huffman(0x30, 8);
    }
    w.huffman(0, 7); // end of block (256)
    w.finish()
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// `count` bits of `value`, least significant first.
    fn bits(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code of `len` bits, most significant first.
    fn huffman(&mut self, code: u64, len: u32) {
        let reversed = (0..len).fold(0, |r, i| r << 1 | (code >> i) & 1);
        self.bits(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}
