//! bench/block (a): the virtio-blk device serving requests from a split queue in guest memory,
//! over a composite disk whose partition files are in the page cache, next to a plain `pread`
//! loop over the same files at the same offsets (the limit). Run through `bench/block.py`, or:
//!
//!   cargo run --release --example bench_block [SECONDS_PER_CASE]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_vmm::api::{DiskConfig, PartitionConfig};
use micro_vmm::devices::virtio::block::{Block, SIZE_MAX};
use micro_vmm::devices::virtio::{ActivateContext, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use micro_vmm::vmm::memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const PARTS: usize = 4;
const PART_SIZE: u64 = 64 << 20;
/// Where the composite's first partition starts (the GPT header before it).
const FIRST_PART: u64 = 20480;
const QSIZE: u16 = 256;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const HDRS: u64 = 0x1_0000;
const STATUS: u64 = 0x2_0000;
const DATA: u64 = 0x10_0000;

struct Ring {
    mem: GuestMemoryMmap,
    avail_idx: u16,
}

impl Ring {
    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + u64::from(i) * 16);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, at).unwrap();
    }

    /// Posts read requests of `len` bytes at the given sectors (one chain each: header, the
    /// data in segments of at most SIZE_MAX bytes, status).
    fn post_reads(&mut self, sectors: &[u64], len: u32) {
        let mut next: u16 = 0;
        for (k, &sector) in sectors.iter().enumerate() {
            let head = next;
            let hdr = HDRS + k as u64 * 16;
            let mut h = [0u8; 16];
            h[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(hdr)).unwrap();
            self.desc(next, hdr, 16, 1, next + 1);
            next += 1;
            let data = DATA + k as u64 * u64::from(len);
            let mut done = 0;
            while done < len {
                let n = (len - done).min(SIZE_MAX);
                self.desc(next, data + u64::from(done), n, 1 | 2, next + 1);
                next += 1;
                done += n;
            }
            self.mem
                .write_obj(0xffu8, GuestAddress(STATUS + k as u64))
                .unwrap();
            self.desc(next, STATUS + k as u64, 1, 2, 0);
            next += 1;
            let slot = GuestAddress(AVAIL + 4 + u64::from(self.avail_idx % QSIZE) * 2);
            self.mem.write_obj(head, slot).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
        }
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Whether the first `n` requests all completed with VIRTIO_BLK_S_OK.
    fn all_ok(&self, n: usize) -> bool {
        let mut st = vec![0xffu8; n];
        self.mem.read_slice(&mut st, GuestAddress(STATUS)).unwrap();
        st.iter().all(|&s| s == 0)
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
}

/// A small deterministic generator for random offsets.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

struct Case {
    name: &'static str,
    len: u32,
    batch: usize,
    random: bool,
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dir = std::env::temp_dir().join(format!("mvmm-bench-block-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut partitions = Vec::new();
    let mut files = Vec::new();
    for p in 0..PARTS {
        let path: PathBuf = dir.join(format!("part{p}.bin"));
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i as u8) ^ (p as u8)).collect();
        let f = File::create(&path).unwrap();
        for i in 0..(PART_SIZE >> 20) {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        partitions.push(PartitionConfig {
            label: format!("part{p}"),
            path: path.clone(),
            writable: false,
        });
        files.push(File::open(&path).unwrap());
    }
    let disk = micro_vmm::disk::open(&DiskConfig::Composite {
        partitions,
        writable: false,
    })
    .expect("composite disk");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 512 << 20)]).unwrap();
    let mut dev = Block::new("bench".into(), disk).unwrap();
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    dev.activate(ActivateContext {
        mem: mem.clone(),
        interrupt: irq,
        queues: vec![q],
        acked_features: VIRTIO_F_VERSION_1,
    })
    .unwrap();
    let mut ring = Ring { mem, avail_idx: 0 };

    let cases = [
        Case {
            name: "4 KiB random reads",
            len: 4096,
            batch: 64,
            random: true,
        },
        Case {
            name: "1 MiB sequential reads",
            len: 1 << 20,
            batch: 16,
            random: false,
        },
    ];
    let span = PARTS as u64 * PART_SIZE;
    println!(
        "bench/block (a): virtio-blk over a composite disk of {PARTS} x {} MiB files in the page \
         cache, {secs} s per case",
        PART_SIZE >> 20
    );
    println!(
        "{:<24} {:>14} {:>10} {:>14} {:>10} {:>8}",
        "workload", "device req/s", "GiB/s", "pread req/s", "GiB/s", "ratio"
    );
    for c in &cases {
        let blocks = span / u64::from(c.len);
        let offset_of = |i: u64, rng: &mut Lcg| {
            let b = if c.random {
                rng.next() % blocks
            } else {
                i % blocks
            };
            b * u64::from(c.len)
        };
        // The device.
        let mut rng = Lcg(7);
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let sectors: Vec<u64> = (0..c.batch as u64)
                .map(|k| (FIRST_PART + offset_of(n + k, &mut rng)) / 512)
                .collect();
            let before = ring.used_idx();
            ring.post_reads(&sectors, c.len);
            // One pass per kick, as the device thread does (a pass is bounded).
            dev.process_queue();
            while dev.queue_event().read().is_ok() {
                dev.process_queue();
            }
            assert_eq!(
                ring.used_idx().wrapping_sub(before) as usize,
                c.batch,
                "device did not serve the batch"
            );
            assert!(ring.all_ok(c.batch), "a request failed");
            n += c.batch as u64;
        }
        let dev_secs = start.elapsed().as_secs_f64();
        let dev_rps = n as f64 / dev_secs;
        // The limit: pread of the same sizes at the same offsets into one buffer.
        let mut rng = Lcg(7);
        let mut buf = vec![0u8; c.len as usize];
        let mut m = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            for k in 0..c.batch as u64 {
                let off = offset_of(m + k, &mut rng);
                let f = &files[(off / PART_SIZE) as usize];
                f.read_exact_at(&mut buf, off % PART_SIZE).unwrap();
            }
            m += c.batch as u64;
        }
        let p_secs = start.elapsed().as_secs_f64();
        let p_rps = m as f64 / p_secs;
        let gib = |rps: f64| rps * f64::from(c.len) / f64::from(1u32 << 30);
        println!(
            "{:<24} {:>14.0} {:>10.2} {:>14.0} {:>10.2} {:>7.2}x",
            c.name,
            dev_rps,
            gib(dev_rps),
            p_rps,
            gib(p_rps),
            dev_rps / p_rps
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
