//! The boot parameters a guest sees, for each entry protocol: bzImage (64-bit entry), ELF
//! vmlinux (64-bit entry) and PVH. A tiny guest prints what it was handed.

mod common;

use common::{hex, probe};

const MIB: u64 = 1 << 20;

struct Seen {
    e820: Vec<(u64, u64, u32)>,
    cmdline: String,
    initrd: Option<(u64, u64, u64)>,
    rsdp: u64,
}

fn parse(o: &common::Outcome) -> Seen {
    let e820 = o
        .with_prefix("E820 ")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (hex(f[1]), hex(f[2]), f[3].parse().unwrap())
        })
        .collect();
    let cmdline = o.with_prefix("CMDLINE ")[0]["CMDLINE ".len()..].to_string();
    let rd = &o.with_prefix("INITRD ")[0];
    let f: Vec<&str> = rd.split_whitespace().collect();
    let initrd = (f[1] != "none").then(|| (hex(f[1]), hex(f[2]), hex(f[3])));
    let rsdp = hex(o.with_prefix("RSDP ")[0].split_whitespace().nth(1).unwrap());
    Seen {
        e820,
        cmdline,
        initrd,
        rsdp,
    }
}

fn initrd_file(tag: &str, len: usize) -> (std::path::PathBuf, u64) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let sum = data.iter().fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
    let p = std::env::temp_dir().join(format!("mvmm-initrd-{}-{tag}", std::process::id()));
    std::fs::write(&p, data).unwrap();
    (p, u64::from(sum))
}

fn expected_e820(mem: u64) -> Vec<(u64, u64, u32)> {
    let low = mem.min(0xc000_0000);
    let mut m = vec![
        (0, 0x9fc00, 1),
        (0x9fc00, 0x100000 - 0x9fc00, 2),
        (0x100000, low - 0x100000, 1),
        (0xc000_0000, 0x4000_0000, 2),
    ];
    if mem > low {
        m.push((1 << 32, mem - low, 1));
    }
    m
}

fn check(guest: &str, entry: &str) {
    let (rd, sum) = initrd_file(entry, 12345);
    let cmdline = format!("probe=bootinfo exit=poweroff marker={entry} a.b=c");
    let o = probe(
        guest,
        &cmdline,
        &["--mem", "512", "--initrd", rd.to_str().unwrap()],
    );
    std::fs::remove_file(&rd).unwrap();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line(&format!("PROBE-UP entry={entry}")), "{o:?}");
    let seen = parse(&o);
    assert_eq!(seen.e820, expected_e820(512 * MIB), "{o:?}");
    assert_eq!(seen.cmdline, cmdline, "{o:?}");
    let (addr, size, got_sum) = seen.initrd.expect("initrd");
    assert_eq!(size, 12345);
    assert_eq!(got_sum, sum, "initrd content");
    assert_eq!(addr % 4096, 0);
    assert!(addr >= MIB && addr + size <= 512 * MIB, "{addr:#x}");
    assert_eq!(seen.rsdp, 0xe0000);
    assert!(o.stderr.contains("guest powered off"), "{o:?}");
}

#[test]
fn elf_64bit_entry_gets_zero_page() {
    check("probe-elf64.elf", "elf64");
}

#[test]
fn pvh_entry_gets_start_info() {
    check("probe-pvh.elf", "pvh");
}

#[test]
fn bzimage_64bit_entry_gets_zero_page() {
    check("probe.bzimage", "bzimage");
}

#[test]
fn memory_above_the_hole_is_described() {
    // 4 GiB of guest RAM: 3 GiB below the MMIO hole, 1 GiB from 4 GiB (pages are touched only
    // where the guest writes).
    let o = probe("probe-elf64.elf", "probe=bootinfo", &["--mem", "4096"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let seen = parse(&o);
    assert_eq!(seen.e820, expected_e820(4096 * MIB), "{o:?}");
    assert_eq!(seen.initrd, None);
}

#[test]
fn default_cmdline_is_used_without_cmdline() {
    let g = common::guest("probe-elf64.elf");
    let o = common::run(&["run", "--kernel", &g, "--console-in", "none"]);
    // The default command line has no probe= or exit= token: the probe powers off.
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.has_line("PROBE-UP entry=elf64"), "{o:?}");
}
