#!/usr/bin/env python3
"""bench/startup: micro-vmm start-up cost, side by side with QEMU microvm (and Firecracker).

For each VMM, on the same tiny PVH guest (resources/test-guests/tiny), 1 vCPU, 256 MiB:
  * spawn -> first guest serial line (the guest prints MARKER-TINY-UP first thing),
  * spawn -> process exit (the guest prints, then resets; each VMM's own reset path),
  * idle VMM RSS: total RSS minus the RSS of the guest-RAM mapping, with the guest idle.
Median/min/max over --runs runs (default 10). Prints one table with ratios to micro-vmm.

  bench/startup.py [--runs N] [--mem MIB]
  FIRECRACKER=/path/to/firecracker bench/startup.py   # adds Firecracker

Targets (docs/performance.md): micro-vmm at most half of Firecracker's times, <= 2 MiB idle.
Timings on a shared machine are noisy: compare only columns of one run.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = b"MARKER-TINY-UP"


def build(out):
    """The static release binary (as shipped to the nested test host) and the guests."""
    binary = subprocess.run([os.path.join(ROOT, "scripts/build-static")], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "resources/test-guests"),
                    f"OUT={out}"], check=True)
    return binary


class Vmm:
    """How to start one VMM with a given guest variant."""

    def __init__(self, name, argv_for, reset_guest, work):
        self.name, self.argv_for, self.reset_guest, self.work = name, argv_for, reset_guest, work


def micro_vmm(binary, guests, mem):
    def argv(guest):
        return [binary, "run", "--kernel", guest, "--mem", str(mem), "--console-in", "none"]
    return Vmm("micro-vmm", argv, os.path.join(guests, "tiny-reset.elf"), None)


def qemu_microvm(guests, mem):
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return None

    def argv(guest):
        return [qemu, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on", "-accel", "kvm",
                "-m", str(mem), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
                "-serial", "stdio", "-monitor", "none", "-no-reboot", "-kernel", guest]
    # microvm has no i8042: its GED reset register is the reset path (-no-reboot exits).
    return Vmm("qemu-microvm", argv, os.path.join(guests, "tiny-gedreset.elf"), None)


def firecracker(binary, guests, mem, work):
    def argv(guest):
        cfg = {
            "boot-source": {"kernel_image_path": guest, "boot_args": "console=ttyS0"},
            "drives": [],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": mem},
        }
        path = os.path.join(work, f"fc-{os.path.basename(guest)}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return [binary, "--no-api", "--config-file", path, "--level", "Error"]
    return Vmm("firecracker", argv, os.path.join(guests, "tiny-reset.elf"), work)


def time_run(vmm):
    """(seconds to first serial line, seconds to exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(vmm.argv_for(vmm.reset_guest), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = None
    buf = b""
    while True:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if first is None and MARKER in buf and b"\n" in buf[buf.index(MARKER):]:
            first = time.perf_counter() - t0
    p.wait(timeout=30)
    end = time.perf_counter() - t0
    if first is None:
        raise RuntimeError(f"{vmm.name}: no marker line (exit {p.returncode})")
    return first, end


def guest_ram_rss_kib(pid, mem_mib):
    """Total RSS and the RSS of mappings at least as large as guest RAM (its backing)."""
    total = ram = 0
    size = rss = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "Size:":
                size = int(parts[1])
            elif len(parts) >= 2 and parts[0] == "Rss:":
                rss = int(parts[1])
                total += rss
                if size >= mem_mib * 1024:
                    ram += rss
    return total, ram


def idle_rss(vmm, mem):
    guest = vmm.reset_guest.replace("tiny-reset", "tiny-idle").replace("tiny-gedreset", "tiny-idle")
    p = subprocess.Popen(vmm.argv_for(guest), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        buf = b""
        deadline = time.time() + 30
        while MARKER not in buf and time.time() < deadline:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        time.sleep(0.3)
        total, ram = guest_ram_rss_kib(p.pid, mem)
        return (total - ram) / 1024.0
    finally:
        p.kill()
        p.wait()


def stats(values):
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mem", type=int, default=256)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mvmm-bench-")
    guests = os.path.join(work, "guests")
    binary = build(guests)
    vmms = [micro_vmm(binary, guests, args.mem)]
    q = qemu_microvm(guests, args.mem)
    if q:
        vmms.append(q)
    else:
        print("qemu-system-x86_64 not found: QEMU column skipped (apt-get install qemu-system-x86)")
    if os.environ.get("FIRECRACKER"):
        vmms.append(firecracker(os.environ["FIRECRACKER"], guests, args.mem, work))

    results = {}
    for v in vmms:
        firsts, exits, rss = [], [], []
        # Interleaving would be fairer still; one warm-up run per VMM keeps caches equal.
        time_run(v)
        for _ in range(args.runs):
            f, e = time_run(v)
            firsts.append(f * 1000)
            exits.append(e * 1000)
        for _ in range(3):
            rss.append(idle_rss(v, args.mem))
        results[v.name] = (stats(firsts), stats(exits), stats(rss))

    base = results["micro-vmm"]
    print(f"\nbench/startup: tiny PVH guest, 1 vCPU, {args.mem} MiB, {args.runs} runs "
          f"(median [min-max]; ratio = VMM / micro-vmm, medians)")
    hdr = f"{'VMM':<14} {'spawn->first line ms':>26} {'spawn->exit ms':>26} {'idle VMM RSS MiB':>24}"
    print(hdr)
    print("-" * len(hdr))
    for name, (f, e, r) in results.items():
        def cell(s, b, fmt):
            ratio = "" if name == "micro-vmm" else f" x{s[0] / b[0]:.1f}" if b[0] else ""
            return f"{fmt.format(s[0])} [{fmt.format(s[1])}-{fmt.format(s[2])}]{ratio}"
        print(f"{name:<14} {cell(f, base[0], '{:.1f}'):>26} {cell(e, base[1], '{:.1f}'):>26} "
              f"{cell(r, base[2], '{:.2f}'):>24}")
    if "firecracker" in results:
        fc = results["firecracker"]
        ok = base[0][0] <= fc[0][0] / 2 and base[1][0] <= fc[1][0] / 2
        print(f"\ntarget (<= half of Firecracker's times): {'met' if ok else 'NOT met'}")
    print(f"target (idle VMM RSS <= 2 MiB): {'met' if base[2][0] <= 2.0 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
