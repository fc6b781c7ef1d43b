#!/usr/bin/env python3
"""bench/vsock (b): vsock throughput and round-trip latency between a Debian guest and the
host, in the nested test host (or directly on VMX/SVM hosts), using examples/vsock_tool.rs
on both sides (the host side through micro-vmm's Unix socket and Firecracker's CONNECT
handshake). Prints host->guest and guest->host MiB/s for one 64 MiB echo (data goes both
ways) and the mean one-byte round trip over 1000 exchanges. TCG time: compare rows of one run.

Firecracker side by side (FIRECRACKER=/path) is not wired yet: its vsock needs its API or a
config with a "vsock" section, which this script does not write yet.

  bench/vsock.py
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import nested  # noqa: E402

CMDLINE = "console=ttyS0 quiet panic=-1 mvmm.test=vsock"


def main():
    kernel = nested.Kernel(nested.kernel_package())
    tool = nested.build_example("vsock_tool")
    l2 = {
        "vmlinux": kernel.vmlinux,
        "initrd.gz": nested.l2_initrd(kernel, "bench", {"vsock_tool": tool}),
        "vsock_tool": tool,
    }
    script = r'''
T=$L2/vsock_tool
U=$TMP/v.sock
$T userve ${U}_6000 > /dev/null 2>&1 & userve=$!
( i=0; while ! grep -q GUEST-VSOCK-GUEST-DONE $TMP/o 2>/dev/null; do sleep 0.5; i=$((i+1)); [ $i -gt 600 ] && break; done; echo done; sleep 2 ) | timeout 600 "$MVMM" run --kernel $L2/vmlinux --initrd $L2/initrd.gz --mem 512 --vsock cid=3,uds=$U --console-in stdin --cmdline "''' + CMDLINE + r'''" > $TMP/o 2>&1 & vmm=$!
i=0; while ! grep -q GUEST-VSOCK-READY $TMP/o; do sleep 0.5; i=$((i+1)); [ $i -gt 300 ] && break; done
echo "=== H2G echo $(timeout 300 $T uconnect $U 5000 67108864)"
echo "=== H2G rtt $(timeout 300 $T uconnect $U 5000 0 --rtt 1000)"
wait $vmm
kill $userve
grep -a "GUEST-V2H" $TMP/o | sed 's/^/=== /'
'''
    text = nested.run_script(kernel, l2, script, 1800)
    rows = {}
    for m in re.finditer(r"^=== (H2G|GUEST-V2H) (echo|rtt) RESULT ok .*?secs=([\d.]+)(?: MiBps=([\d.]+))?",
                         text, re.M):
        rows[(m.group(1), m.group(2))] = (float(m.group(3)), m.group(4))
    print(f"\nbench/vsock (b): Debian guest, "
          f"{'directly' if nested.hardware_kvm() else 'L2 in the nested test host, TCG time'}")
    print(f"{'direction':<14} {'64 MiB echo MiB/s':>18} {'mean RTT ms':>24}")
    ok = True
    for side, label in (("H2G", "host->guest"), ("GUEST-V2H", "guest->host")):
        echo = rows.get((side, "echo"))
        rtt = rows.get((side, "rtt"))
        if not echo or not rtt:
            ok = False
        print(f"{label:<14} {echo[1] if echo else '-':>18} "
              f"{(f'{rtt[0]:.3f}' if rtt else '-'):>24}")
    if not ok:
        print("missing results; log tail:\n" + "\n".join(text.splitlines()[-30:]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
