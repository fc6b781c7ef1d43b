#!/usr/bin/env python3
"""bench/app: how long `micro-vmm --app` takes for the sample app, from spawn to exit, and
where the time goes. Runs where Linux boots (the nested test host here: TCG times, so
compare runs with each other, not with hardware numbers).

  bench/app.py [--runs N]

Each run: micro-vmm --app hello.apk (the idsig already made) with RUST_LOG=info, whose
`timing:` lines give the milestones (ms since micro-vmm started):

  disk build    start -> payload disk built (config read, idsig checked, images, metadata)
  VMM start     -> VM built (KVM, memory, kernel and initrd loaded, devices)
  kernel boot   -> guest agent connected (kernel boot, modules, vsock up)
  agent work    -> payload started (partitions, metadata, verification, extraction, config)
  payload       -> payload finished (the sample's script)
  stop          -> VM exited (power-off, teardown)

plus the wall time spawn -> exit measured by the L1 shell. Prints the median of each and
every run's raw numbers.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/e2e"))
import nested  # noqa: E402

MILESTONES = [("disk build", "payload disk built"), ("VMM start", "VM built"),
              ("kernel boot", "guest agent connected"), ("agent work", "payload started"),
              ("payload", "payload finished"), ("stop", "VM exited")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mvmm-bench-app-")
    guest = os.path.join(work, "guest")
    kernel = nested.write_app_guest(guest)
    apk = os.path.join(work, "hello.apk")
    subprocess.run([sys.executable, os.path.join(ROOT, "resources/examples/build-app.py"), apk,
                    "--exit-code", "0"], check=True, stdout=subprocess.DEVNULL)
    files = {n: open(p, "rb").read() for n, p in (
        ("vmlinux", os.path.join(guest, "vmlinux")),
        ("initrd.img", os.path.join(guest, "initrd.img")), ("hello.apk", apk))}
    script = (
        ': > $TMP/hello.idsig\n'
        '"$MVMM" create-idsig $L2/hello.apk $TMP/hello.idsig 2>/dev/null\n'
        f'for i in $(seq {a.runs}); do\n'
        '  t0=$(cut -d" " -f1 /proc/uptime)\n'
        '  RUST_LOG=info "$MVMM" --app $L2/hello.apk $TMP/hello.idsig assets/vm_config.json '
        '--guest-dir $L2 --serial none < /dev/null > /dev/null 2> $TMP/err; rc=$?\n'
        '  t1=$(cut -d" " -f1 /proc/uptime)\n'
        '  echo "=== RUN $i rc=$rc t0=$t0 t1=$t1"\n'
        '  grep -o "timing: .*" $TMP/err | sed "s/^/=== /"\n'
        'done\n')
    text = nested.run_script(kernel, files, script, 300 + 120 * a.runs)
    runs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"=== RUN \d+ rc=(\d+) t0=([\d.]+) t1=([\d.]+)", line)
        if m:
            cur = {"rc": int(m.group(1)),
                   "wall": (float(m.group(3)) - float(m.group(2))) * 1000}
            runs.append(cur)
            continue
        m = re.match(r"=== timing: ([\d.]+) ms (.*)", line)
        if m and cur is not None:
            cur[m.group(2).strip()] = float(m.group(1))
    good = [r for r in runs if r["rc"] == 0 and all(k in r for _, k in MILESTONES)]
    print(f"bench/app: sample app, {len(good)} of {len(runs)} runs complete "
          f"({'nested test host, TCG' if not nested.hardware_kvm() else 'hardware KVM'})")
    if not good:
        print("\n".join(text.splitlines()[-40:]))
        return 1
    rows = []
    for name, key in MILESTONES:
        idx = [k for _, k in MILESTONES].index(key)
        prev = MILESTONES[idx - 1][1] if idx else None
        rows.append((name, [r[key] - (r[prev] if prev else 0.0) for r in good]))
    rows.append(("spawn -> exit (wall)", [r["wall"] for r in good]))
    print(f"{'phase':<22} {'median ms':>10}   runs")
    for name, vals in rows:
        print(f"{name:<22} {statistics.median(vals):>10.1f}   "
              + " ".join(f"{v:.0f}" for v in vals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
