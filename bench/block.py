#!/usr/bin/env python3
"""bench/block: virtio-blk throughput.

(a) in-process: the block device serving requests from a split queue in guest memory over a
    composite disk in the page cache (4 KiB random and 1 MiB sequential reads): requests/s and
    GiB/s, next to a plain pread loop on the same files (examples/bench_block.rs);
(b) in the nested test host (or directly on VMX/SVM hosts): `dd` in a Debian guest from
    /dev/vda (a 64 MiB raw image), bs=1M and bs=4k, side by side with Firecracker when
    FIRECRACKER=/path/to/firecracker is given. TCG time: compare rows of one run only.

  bench/block.py [--seconds S] [--skip-nested]
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import nested  # noqa: E402

DISK_MIB = 64
CMDLINE = "console=ttyS0 quiet panic=-1 reboot=k mvmm.test=ddbench"


def in_process(seconds):
    subprocess.run(["cargo", "run", "--quiet", "--release", "--example", "bench_block",
                    str(seconds)], cwd=ROOT, check=True)


def nested_dd():
    kernel = nested.Kernel(nested.kernel_package())
    l2 = {
        "vmlinux": kernel.vmlinux,
        "initrd.gz": nested.l2_initrd(kernel, "bench"),
        "disk.img": bytes((i * 7) % 256 for i in range(256)) * (DISK_MIB << 12),
    }
    script = ('echo "=== ROW micro-vmm"\n'
              '"$MVMM" run --kernel $L2/vmlinux --initrd $L2/initrd.gz --mem 256 '
              f'--console-in none --disk $L2/disk.img --cmdline "{CMDLINE}" | grep GUEST-DD\n')
    extra = {}
    fc = os.environ.get("FIRECRACKER")
    if fc:
        cfg = {
            "boot-source": {"kernel_image_path": "/l2/vmlinux", "initrd_path": "/l2/initrd.gz",
                            "boot_args": CMDLINE + " pci=off"},
            "drives": [{"drive_id": "vda", "path_on_host": "/l2/disk.img",
                        "is_root_device": False, "is_read_only": True}],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
        }
        l2["fc-dd.json"] = json.dumps(cfg).encode()
        extra = nested.binary_with_libraries(fc, "firecracker")
        script += ('echo "=== ROW firecracker"\n'
                   'timeout 600 /bin/firecracker --no-api --config-file $L2/fc-dd.json '
                   '--level Error | grep GUEST-DD\n')
    if nested.hardware_kvm():
        text = nested.run_direct(l2, script.replace("/bin/firecracker", fc or ""), 1800)
    else:
        text = nested.run_nested(kernel, l2, script, 1800, extra_l1=extra)
    print(f"\nbench/block (b): dd from /dev/vda ({DISK_MIB} MiB raw image) in a Debian guest, "
          f"{'directly' if nested.hardware_kvm() else 'L2 in the nested test host, TCG time'}")
    print(f"{'VMM':<14} {'bs':>4} {'MiB/s':>10}")
    row = None
    found = False
    for line in text.splitlines():
        if line.startswith("=== ROW "):
            row = line[8:].strip()
        m = re.search(r"GUEST-DD bs=(\S+) t0=([\d.]+) t1=([\d.]+)", line)
        if m and row:
            secs = max(float(m.group(3)) - float(m.group(2)), 0.01)
            print(f"{row:<14} {m.group(1):>4} {DISK_MIB / secs:>10.1f}")
            found = True
    if not found:
        print("no dd results; L1 log tail:\n" + "\n".join(text.splitlines()[-30:]))
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--skip-nested", action="store_true")
    a = ap.parse_args()
    in_process(a.seconds)
    return 0 if a.skip_nested else nested_dd()


if __name__ == "__main__":
    sys.exit(main())
