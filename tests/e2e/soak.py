#!/usr/bin/env python3
"""SMP boot soak: many verbose Debian-kernel boots at 2 and 4 vCPUs, micro-vmm and Firecracker
side by side in the same nested test host (or directly where /dev/kvm is VMX/SVM).

Each boot runs the ELF vmlinux with the project's guest initramfs, a verbose console (no
`quiet`), 256 MiB, and `mvmm.test=reboot reboot=k`: a boot passes when the guest reaches
userspace (GUEST-UP), sees every vCPU (GUEST-CPUS N) and its `reboot -f` ends the VMM
(micro-vmm exit 32, Firecracker exit 0). Anything else is a failure: a triple fault, a crash,
or a hang. A run still going after --boot-timeout seconds gets SIGUSR1 first (micro-vmm then
prints its state dump: registers, vCPU events, LAPIC IRR/ISR, device interrupts) and is
killed 5 s later. Runs are interleaved (micro-vmm, Firecracker, micro-vmm, ...).

  tests/e2e/soak.py [--boots 50] [--cpus 2,4] [--no-firecracker] [--fc-every N] [--save-log F]

Not part of the default CI run (it takes about an hour for 50+50 boots per vCPU count);
`scripts/test` runs the short 2-vCPU verbose scenarios of tests/e2e/run.py instead.
Exits non-zero when any micro-vmm boot failed. Prints every failure's console tail, stderr
and state dump, and a closing table of counts.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nested  # noqa: E402

FIRECRACKER = os.path.join(nested.ROOT, "..", "shared", "anchors", "firecracker")
BASE = "console=ttyS0 panic=-1 reboot=k mvmm.test=reboot"

# One boot: VMM in the background, a watchdog that asks for a dump then kills.
SCRIPT_HEAD = r"""
now() { cut -d' ' -f1 /proc/uptime; }
boot() {  # TAG TIMEOUT CMD...
    tag=$1; tmo=$2; shift 2
    out=$TMP/$tag.out; err=$TMP/$tag.err
    t0=$(now)
    "$@" < /dev/null > "$out" 2> "$err" &
    pid=$!
    ( sleep "$tmo"; kill -USR1 $pid 2>/dev/null; sleep 5; kill -9 $pid 2>/dev/null ) &
    dog=$!
    wait $pid; rc=$?
    kill $dog 2>/dev/null; wait $dog 2>/dev/null
    t1=$(now)
    up=$(grep -c '^GUEST-UP' "$out")
    cpus=$(sed -n 's/^GUEST-CPUS \([0-9]*\).*/\1/p' "$out" | head -n1)
    why=$(grep -o 'triple fault\|VM crashed\|KVM internal error' "$err" | head -n1 | tr ' ' _)
    echo "=== BOOT $tag rc=$rc up=$up cpus=${cpus:-0} secs=$(echo "$t0 $t1" | awk '{print $2-$1}') why=${why:--}"
    echo "$tag" > $TMP/last
}
show() {  # TAG: the tail of a failed boot's console and all of its stderr
    tag=$1
    echo "=== DETAIL $tag"
    tail -n 15 "$TMP/$tag.out" | sed "s/^/[$tag:out] /"
    tail -n 200 "$TMP/$tag.err" | sed "s/^/[$tag:err] /"
}
"""


def fc_config(cpus, cmdline):
    return json.dumps({
        "boot-source": {"kernel_image_path": "/l2/vmlinux", "initrd_path": "/l2/initrd.gz",
                        "boot_args": cmdline},
        "drives": [],
        "machine-config": {"vcpu_count": cpus, "mem_size_mib": 256},
    }).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--boots", type=int, default=50, help="boots per VMM and vCPU count")
    ap.add_argument("--cpus", default="2,4", help="vCPU counts, comma-separated")
    ap.add_argument("--no-firecracker", action="store_true")
    ap.add_argument("--fc-every", type=int, default=1,
                    help="boot Firecracker after every Nth micro-vmm boot (default: each)")
    ap.add_argument("--cmdline-extra", default="", help="appended to the guest command line")
    ap.add_argument("--boot-timeout", type=int, default=150)
    ap.add_argument("--mvmm-extra", default="", help="extra micro-vmm flags (shell words)")
    ap.add_argument("--save-log", help="write the whole L1 log (every console) to this file")
    args = ap.parse_args()

    kernel = nested.Kernel(nested.kernel_package())
    l2 = {"vmlinux": kernel.vmlinux, "initrd.gz": nested.l2_initrd(kernel, "soak")}
    cmdline = BASE + (" " + args.cmdline_extra if args.cmdline_extra else "")
    counts = [int(c) for c in args.cpus.split(",")]
    fc = None if args.no_firecracker else os.path.abspath(FIRECRACKER)
    if fc and not os.path.exists(fc):
        nested.log(f"no Firecracker at {fc}: micro-vmm only")
        fc = None
    extra_l1 = {}
    if fc:
        for n in counts:
            l2[f"fc-{n}.json"] = fc_config(n, cmdline + " pci=off")
        extra_l1 = nested.binary_with_libraries(fc, "firecracker")

    lines = []
    for n in counts:
        mv = (f'"$MVMM" run --kernel $L2/vmlinux --initrd $L2/initrd.gz --mem 256 --cpus {n} '
              f'--console-in none {args.mvmm_extra} --cmdline \'{cmdline}\'')
        fcc = f'"$FC" --no-api --config-file $L2/fc-{n}.json --level Error'
        body = f'boot mvmm-{n}-$i {args.boot_timeout} {mv}\n'
        body += f'case "$rc" in 32) [ "$up" = 1 ] && [ "$cpus" = {n} ] || show mvmm-{n}-$i ;; *) show mvmm-{n}-$i ;; esac\n'
        if fc:
            body += f'if [ $((i % {args.fc_every})) = 0 ]; then\n'
            body += f'boot fc-{n}-$i {args.boot_timeout} {fcc}\n'
            body += f'case "$rc" in 0) [ "$up" = 1 ] || show fc-{n}-$i ;; *) show fc-{n}-$i ;; esac\n'
            body += 'fi\n'
        lines.append(f'i=0; while [ $i -lt {args.boots} ]; do\n{body}i=$((i + 1)); done')
    script = SCRIPT_HEAD + ("FC=/bin/firecracker\n" if fc else "") + "\n".join(lines) + "\n"

    per_boot = 40 * (2 if fc else 1)
    timeout = 600 + per_boot * args.boots * len(counts)
    if nested.hardware_kvm():
        script = script.replace("FC=/bin/firecracker", f"FC='{fc}'")
        text = nested.run_direct(l2, script, timeout)
    else:
        text = nested.run_nested(kernel, l2, script, timeout, extra_l1=extra_l1)

    text = text.replace("\r", "")
    if args.save_log:
        with open(args.save_log, "w") as f:
            f.write(text)
    table = {}
    bad = 0
    for m in re.finditer(r"^=== BOOT (\S+)-(\d+)-(\d+) rc=(\d+) up=(\d+) cpus=(\d+) secs=(\S+) why=(\S+)",
                         text, re.M):
        vmm, n, _, rc, up, cpus, secs, why = m.groups()
        n, rc = int(n), int(rc)
        want_rc = 32 if vmm == "mvmm" else 0
        ok = rc == want_rc and up == "1" and int(cpus) == n
        row = table.setdefault((vmm, n), {"ok": 0, "fail": 0, "secs": [], "exits": {}})
        row["ok" if ok else "fail"] += 1
        row["secs"].append(float(secs))
        if not ok:
            kind = {137: "hang", 32: "reset"}.get(rc, f"exit {rc}")
            if why != "-":
                kind = why.replace("_", " ")
            elif rc == want_rc:
                kind = "reset before userspace" if up != "1" else "wrong CPU count"
            row["exits"][kind] = row["exits"].get(kind, 0) + 1
            if vmm == "mvmm":
                bad += 1
    for block in re.finditer(r"^=== DETAIL (\S+)\n((?:\[.*\n?)*)", text, re.M):
        print(f"--- failed boot {block.group(1)}")
        print(block.group(2))
    print(f"\nsoak: {kernel.pkg}, ELF vmlinux, verbose console, 256 MiB, "
          f"{'directly on this host' if nested.hardware_kvm() else 'L2 in the nested test host'}")
    print(f"{'':<14}{'vCPUs':>6}{'passed':>8}{'failed':>8}{'median s':>10}  failures")
    for (vmm, n), row in sorted(table.items()):
        secs = sorted(row["secs"])
        med = secs[len(secs) // 2] if secs else 0
        why = ", ".join(f"{k} x{v}" for k, v in row["exits"].items()) or "-"
        name = "micro-vmm" if vmm == "mvmm" else "firecracker"
        print(f"{name:<14}{n:>6}{row['ok']:>8}{row['fail']:>8}{med:>10.1f}  {why}")
    expected = args.boots * len(counts)
    ran = sum(r["ok"] + r["fail"] for (v, _), r in table.items() if v == "mvmm")
    if ran < expected:
        print(f"only {ran} of {expected} micro-vmm boots ran; L1 log tail:")
        print("\n".join(text.splitlines()[-40:]))
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
