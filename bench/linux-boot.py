#!/usr/bin/env python3
"""bench/linux-boot: how fast micro-vmm boots Debian's cloud kernel to userspace.

Inside the nested test host (or directly where /dev/kvm is VMX/SVM), times
  spawn -> first serial byte -> the kernel's "Run /init" -> the guest's userspace marker -> exit
over --runs boots (default 5) of the Debian cloud kernel with the project's guest initramfs,
1 vCPU, 256 MiB, and prints the medians as a table. Rows:
  micro-vmm vmlinux quiet    the headline (PVH entry, `quiet`: no kernel log on the console)
  micro-vmm bzImage quiet    the same through the bzImage (its LZ4 decompressor runs in the guest)
  micro-vmm vmlinux verbose  without `quiet`, so that "Run /init" is printed and can be timed
With FIRECRACKER=/path/to/firecracker (its libc, libgcc_s and loader are copied into L1 from
this host) the same vmlinux boots run side by side under Firecracker, and ratios are printed.
Target: micro-vmm no slower than Firecracker to userspace in the same L1.

Timings inside L1 are TCG time: compare rows of one run, not absolute numbers.
"""

import argparse
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "e2e"))
import nested  # noqa: E402

MARKERS = ["Run /init", "GUEST-UP"]
BASE = "console=ttyS0 panic=-1 reboot=k mvmm.test=reboot"


def fc_config(cmdline):
    return json.dumps({
        "boot-source": {"kernel_image_path": "/l2/vmlinux", "initrd_path": "/l2/initrd.gz",
                        "boot_args": cmdline},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
    }).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    kernel = nested.Kernel(nested.kernel_package())
    timer = nested.build_example("boot_timer")
    l2 = {
        "bzImage": kernel.bzimage,
        "vmlinux": kernel.vmlinux,
        "initrd.gz": nested.l2_initrd(kernel, "bench"),
        "boot_timer": timer,
    }
    rows = [
        ("micro-vmm vmlinux quiet", ["$MVMM", "run", "--kernel", "$L2/vmlinux"], BASE + " quiet"),
        ("micro-vmm bzImage quiet", ["$MVMM", "run", "--kernel", "$L2/bzImage"], BASE + " quiet"),
        ("micro-vmm vmlinux verbose", ["$MVMM", "run", "--kernel", "$L2/vmlinux"], BASE),
    ]
    fc = os.environ.get("FIRECRACKER")
    extra_l1 = {}
    if fc:
        for label, cmdline in (("quiet", BASE + " quiet"), ("verbose", BASE)):
            l2[f"fc-{label}.json"] = fc_config(cmdline + " pci=off")
            rows.append((f"firecracker vmlinux {label}",
                         ["$FC", "--no-api", "--config-file", f"$L2/fc-{label}.json",
                          "--level", "Error"], None))
        extra_l1 = nested.binary_with_libraries(fc, "firecracker")

    lines = []
    for label, cmd, cmdline in rows:
        full = list(cmd)
        if cmdline is not None:
            full += ["--initrd", "$L2/initrd.gz", "--mem", "256", "--console-in", "none",
                     "--cmdline", cmdline]
        quoted = " ".join(a if a.startswith("$") else "'" + a + "'" for a in full)
        markers = " ".join("'" + m + "'" for m in MARKERS)
        lines.append(f'i=0; while [ $i -lt {args.runs} ]; do '
                     f'echo "=== RUN {label}: $($L2/boot_timer {markers} -- timeout 120 {quoted})"; '
                     f'i=$((i + 1)); done')
    script = "chmod +x $L2/boot_timer\n" + "\n".join(lines) + "\n"
    if nested.hardware_kvm():
        script = f"FC='{fc}'\n" + script
        text = nested.run_direct(l2, script, 3600)
    else:
        text = nested.run_nested(kernel, l2, "FC=/bin/firecracker\n" + script, 3600,
                                 extra_l1=extra_l1)

    results = {}
    for label, _, _ in rows:
        runs = []
        for m in re.finditer(rf"^=== RUN {re.escape(label)}: TIMING (.*)$", text, re.M):
            fields = dict(kv.split("=", 1) for kv in m.group(1).split())
            runs.append(fields)
        results[label] = runs

    def med(runs, key):
        vals = [float(r[key]) for r in runs if r.get(key, "-") != "-"]
        return statistics.median(vals) if vals else None

    cols = [("first", "first byte"), ("Run_/init", "Run /init"), ("GUEST-UP", "userspace"),
            ("exit", "exit")]
    print(f"\nbench/linux-boot: {kernel.pkg}, 1 vCPU, 256 MiB, median of {args.runs} "
          f"({'directly on this host' if nested.hardware_kvm() else 'L2 in the nested test host, TCG time'}), ms")
    hdr = f"{'':<28}" + "".join(f"{c[1]:>13}" for c in cols) + f"{'ok runs':>9}"
    print(hdr)
    print("-" * len(hdr))
    for label, _, _ in rows:
        runs = results[label]
        ok = sum(1 for r in runs if r.get("GUEST-UP", "-") != "-")
        cells = "".join(f"{(med(runs, k) or 0):>13.0f}" if med(runs, k) is not None
                        else f"{'-':>13}" for k, _ in cols)
        print(f"{label:<28}{cells}{ok:>6}/{len(runs)}")
    if fc:
        for mode in ("quiet", "verbose"):
            ours = results[f"micro-vmm vmlinux {mode}"]
            theirs = results[f"firecracker vmlinux {mode}"]
            a, b = med(ours, "GUEST-UP"), med(theirs, "GUEST-UP")
            if a and b:
                verdict = "met" if a <= b else "NOT met"
                print(f"{mode}: to userspace micro-vmm/firecracker = {a / b:.2f} "
                      f"(target <= 1.00: {verdict})")
    incomplete = [l for l in text.splitlines() if l.startswith("=== RUN ") and "rc=32" not in l]
    if incomplete:
        print("\nruns that did not end with the guest's reset (exit 32):")
        print("\n".join(incomplete))
    missing = [l for l, r in results.items() if not r]
    if missing:
        print("no timings for: " + ", ".join(missing))
        print("\n".join(text.splitlines()[-30:]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
