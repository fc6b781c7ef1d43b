#!/usr/bin/env python3
"""End-to-end scenarios: micro-vmm boots Debian's cloud kernel (bzImage and ELF vmlinux).

Runs inside the nested test host (QEMU TCG L1 with kvm_amd) on machines without VMX/SVM, or
directly where /dev/kvm is hardware-backed. Prints each scenario's verdict and timing, then
a closing line "e2e: N passed, N failed"; exits non-zero when any scenario failed.

  tests/e2e/run.py [--only SUBSTRING] [--timeout SECONDS]
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nested  # noqa: E402

CMDLINE = "console=ttyS0 quiet panic=-1"

SCRIPT_HEAD = r"""
now() { cut -d' ' -f1 /proc/uptime; }
waitfor() {  # FILE PATTERN: wait (bounded, about 120 s) until PATTERN shows up in FILE
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 600 ] && return 1; sleep 0.2
    done
}
scenario() {  # NAME TIMEOUT FEED ARGS...: run micro-vmm, print its rc and output, tagged.
    # A micro-vmm still running at TIMEOUT gets SIGUSR1 (its state dump goes to stderr) and
    # SIGKILL 5 s later (exit 137).
    name=$1; tmo=$2; feed=$3; shift 3
    out=$TMP/$name.out; err=$TMP/$name.err; lg=$TMP/$name.log
    rm -f "$out" "$err" "$lg"
    echo "=== BEGIN $name"
    t0=$(now)
    if [ -n "$feed" ]; then
        # The feed writes micro-vmm's stdin through a FIFO and is stopped as soon as
        # micro-vmm exits, so a scenario that ends early never leaves its feed waiting.
        fifo=$TMP/$name.fifo
        rm -f "$fifo"; mkfifo "$fifo"
        ( eval "$feed" ) > "$fifo" &
        feedpid=$!
        timeout -s USR1 -k 5 "$tmo" "$MVMM" "$@" < "$fifo" > "$out" 2> "$err"
        rc=$?
        kill $feedpid 2>/dev/null; wait $feedpid 2>/dev/null
        rm -f "$fifo"
    else
        timeout -s USR1 -k 5 "$tmo" "$MVMM" "$@" < /dev/null > "$out" 2> "$err"
        rc=$?
    fi
    t1=$(now)
    echo "=== END $name rc=$rc t0=$t0 t1=$t1"
    sed "s/^/[$name:out] /" "$out"
    sed "s/^/[$name:err] /" "$err"
    [ -f "$lg" ] && sed "s/^/[$name:log] /" "$lg"
    if [ -n "$POST" ]; then ( eval "$POST" ) 2>&1 | sed "s/^/[$name:post] /"; fi
    POST=
    true
}
"""


class Scenario:
    def __init__(self, name, args, check, feed="", timeout=90, post=""):
        self.name, self.args, self.check, self.feed, self.timeout = name, args, check, feed, timeout
        self.post = post

    def shell(self):
        def q(s):
            return "'" + s.replace("'", "'\"'\"'") + "'"
        def arg(a):
            # Arguments naming $L2/$TMP paths are expanded by the shell; nothing else is.
            return '"' + a + '"' if "$" in a and all(c not in a for c in '"`\\') else q(a)
        post = f"POST={q(self.post)}; " if self.post else ""
        return (post + f"scenario {self.name} {self.timeout} {q(self.feed)} "
                + " ".join(arg(a) for a in self.args))


class Result:
    def __init__(self, name, rc, secs, out, err, logf, post):
        self.name, self.rc, self.secs, self.out, self.err, self.log = name, rc, secs, out, err, logf
        self.post = post

    def lines(self, prefix):
        return [l[len(prefix):].strip() for l in self.out if l.startswith(prefix)]


def parse(text, names):
    results = {}
    for name in names:
        m = re.search(rf"^=== END {re.escape(name)} rc=(\d+) t0=([\d.]+) t1=([\d.]+)", text, re.M)
        if not m:
            continue
        tagged = {}
        for kind in ("out", "err", "log", "post"):
            tag = f"[{name}:{kind}] "
            tagged[kind] = [l[len(tag):].rstrip("\r") for l in text.splitlines()
                            if l.startswith(tag)]
        results[name] = Result(name, int(m.group(1)), float(m.group(3)) - float(m.group(2)),
                               tagged["out"], tagged["err"], tagged["log"], tagged["post"])
    return results


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


# Files for the disk scenario: (name, content, writable), laid out as a composite disk.
PARTS = [
    ("ro-odd", bytes((i * 7 + 1) % 256 for i in range(10000)), False),
    ("ro-empty", b"", False),
    ("rw-part", bytes((i * 3) % 256 for i in range(8192)), True),
    ("ro-odd2", bytes((i * 11 + 5) % 256 for i in range(12293)), False),
]
RAW_RW = bytes(1 << 20)
RAW_RO = bytes((i * 13) % 256 for i in range(64 * 1024))


def disk_files():
    """The disk scenario's files for $L2, and its vmconfig JSON (paths relative to it)."""
    files = {f"part-{label}.bin": data for label, data, _ in PARTS}
    files["raw-rw.img"] = RAW_RW
    files["raw-ro.img"] = RAW_RO
    vm = {
        "name": "e2e-disks",
        "kernel": "bzImage",
        "initrd": "initrd.gz",
        "params": f"{CMDLINE} mvmm.test=disks",
        "memory_mib": 256,
        "platform_version": "~1.0",
        "disks": [
            {"partitions": [{"label": l, "path": f"part-{l}.bin", "writable": w}
                            for l, _, w in PARTS], "writable": True},
            {"image": "raw-rw.img", "writable": True},
            {"image": "raw-ro.img", "writable": False},
        ],
    }
    files["vm-disks.json"] = json.dumps(vm, indent=1).encode()
    return files


VSOCK_TESTS = ("echo", "conns", "nobody", "abort", "after", "rtt")


def vsock_scenario():
    def check(r):
        expect(r.rc == 0, f"exit {r.rc}, want 0")
        guest = {l.split()[0]: l for l in r.lines("GUEST-V2H ")}
        host = {l.split()[0]: l for l in r.post if l.split() and l.split()[0] in VSOCK_TESTS}
        for side, res in (("guest->host", guest), ("host->guest", host)):
            for t in ("echo", "conns", "after", "rtt"):
                expect("RESULT ok" in res.get(t, ""), f"{side} {t}: {res.get(t)}")
            expect("RESULT refused" in res.get("nobody", ""),
                   f"{side} connect to a port nobody listens on: {res.get('nobody')}")
            secs = re.search(r"secs=([\d.]+)", res.get("nobody", ""))
            expect(secs and float(secs.group(1)) < 5, f"{side} refusal not prompt: {res}")
            expect("RESULT" in res.get("abort", ""), f"{side} abort: {res.get('abort')}")
        expect("RESULT ok conns=1 bytes=67108864" in guest["echo"], guest["echo"])
        expect("RESULT ok conns=1 bytes=67108864" in host["echo"], host["echo"])
        expect("conns=100" in guest["conns"] and "conns=100" in host["conns"], "100 connections")

    tool = "$L2/vsock_tool"
    uds = "$TMP/vsock.sock"
    host_tests = [
        ("echo", "5000 67108864"),
        ("conns", "5000 65536 --conns 100"),
        ("nobody", "5001 1"),
        ("abort", "5000 8388608 --abort-after 1048576"),
        ("after", "5000 1048576"),
        ("rtt", "5000 0 --rtt 1000"),
    ]
    feed = "\n".join(
        [f"{tool} userve {uds}_6000 > /dev/null 2>&1 & userve=$!",
         "waitfor $out GUEST-VSOCK-READY"]
        + [f"echo \"{t} $(timeout 120 {tool} uconnect {uds} {a})\" >> $TMP/vsock-host.txt"
           for t, a in host_tests]
        + ["waitfor $out GUEST-VSOCK-GUEST-DONE", "echo done", "sleep 1", "kill $userve"])
    return Scenario("vsock", [
        "run", "--kernel", "$L2/bzImage", "--initrd", "$L2/initrd.gz", "--mem", "512",
        "--vsock", f"cid=3,uds={uds}", "--console-in", "stdin",
        "--cmdline", f"{CMDLINE} mvmm.test=vsock"], check, feed=feed, timeout=300,
        post="cat $TMP/vsock-host.txt; rm -f $TMP/vsock-host.txt")


def md5_padded(data, sectors):
    return hashlib.md5(data + bytes(sectors * 512 - len(data))).hexdigest()


def scenarios():
    out = []

    def disks_check(r):
        expect(r.rc == 0, f"exit {r.rc}, want 0")
        blocks = {}
        for line in r.lines("GUEST-BLOCK "):
            name, *kv = line.split()
            blocks[name] = dict(x.split("=", 1) for x in kv)
        by_label = {v["label"]: (k, v) for k, v in blocks.items() if v["label"] != "-"}
        for label, data, writable in PARTS:
            expect(label in by_label, f"partition {label} not found by its GPT label: {blocks}")
            _, b = by_label[label]
            expect(int(b["sectors"]) * 512 >= len(data), f"{label} too small: {b}")
            expect(b["md5"] == md5_padded(data, int(b["sectors"])), f"{label} bytes differ")
        expect(blocks.get("vdb", {}).get("md5") == hashlib.md5(RAW_RW).hexdigest(), "vdb bytes")
        expect(blocks.get("vdc", {}).get("ro") == "1", f"vdc read-only: {blocks.get('vdc')}")
        expect(blocks.get("vdc", {}).get("md5") == hashlib.md5(RAW_RO).hexdigest(), "vdc bytes")
        writes = dict(l.split() for l in r.lines("GUEST-WRITE "))
        rw_dev = by_label["rw-part"][0]
        expect(writes.get(rw_dev) == "ok", f"write to rw-part: {writes}")
        expect(writes.get("vdb") == "ok", f"write to vdb: {writes}")
        expect(writes.get("vdc") == "failed", f"write to read-only vdc: {writes}")
        for label in ("ro-odd", "ro-odd2"):
            expect(writes.get(by_label[label][0]) == "failed", f"write to {label}: {writes}")
        post = dict(l.split(" ", 1) for l in r.post if " " in l)
        expect(post.get("rw-part") == "GUEST-WROTE-PART", f"host file of rw-part: {post}")
        expect(post.get("raw-rw") == "GUEST-WROTE-RAW", f"host raw-rw.img: {post}")
        for label, data, _ in PARTS:
            if label.startswith("ro-"):
                expect(post.get(label) == hashlib.md5(data).hexdigest(), f"{label} file changed")
        expect(post.get("raw-ro") == hashlib.md5(RAW_RO).hexdigest(), "raw-ro.img changed")

    post = " ; ".join(
        [f"echo \"rw-part $(head -c 16 $L2/part-rw-part.bin)\"",
         "echo \"raw-rw $(head -c 15 $L2/raw-rw.img)\"",
         "echo \"raw-ro $(md5sum < $L2/raw-ro.img | cut -d' ' -f1)\""]
        + [f"echo \"{l} $(md5sum < $L2/part-{l}.bin | cut -d' ' -f1)\""
           for l, _, w in PARTS if not w])
    out.append(Scenario("disks", ["run", "--config", "$L2/vm-disks.json", "--console-in",
                                  "none"], disks_check, post=post))
    out.append(vsock_scenario())
    # SMP with a verbose console: every vCPU runs while the console is busy (issue 13). Not
    # in the default set: on this project's nested host (QEMU 7.2 multi-threaded TCG) such
    # boots still hang now and then with an L2 vCPU holding L1's own registers, an L0 fault
    # (docs/testing.md). MVMM_E2E_SMP_VERBOSE=1 adds them.
    smp_verbose = (("smp2-verbose-a", 2), ("smp2-verbose-b", 2), ("smp4-verbose", 4))
    if os.environ.get("MVMM_E2E_SMP_VERBOSE") != "1":
        smp_verbose = ()
    for name, cpus in smp_verbose:
        def smp_check(r, cpus=cpus):
            expect(r.rc == 32, f"exit {r.rc}, want 32 (reboot -f through the i8042)")
            expect(r.lines("GUEST-CPUS ") == [str(cpus)], f"CPUs seen: {r.lines('GUEST-CPUS ')}")
            expect(any("i8042 reset line" in l for l in r.err), "stderr reason")
            expect(any("smp: Brought up 1 node, " in l for l in r.out), "no SMP bring-up line")

        out.append(Scenario(name, [
            "run", "--kernel", "$L2/vmlinux", "--initrd", "$L2/initrd.gz", "--mem", "256",
            "--cpus", str(cpus), "--console-in", "none",
            "--cmdline", "console=ttyS0 panic=-1 reboot=k mvmm.test=reboot"], smp_check,
            timeout=150))
    for fmt, image in (("bzimage", "$L2/bzImage"), ("vmlinux", "$L2/vmlinux")):
        initrd = ["--initrd", "$L2/initrd.gz"]
        base = ["run", "--kernel", image, "--console-in", "none"]

        def boot_check(r, fmt=fmt):
            expect(r.rc == 0, f"exit {r.rc}, want 0 (poweroff -f)")
            expect(r.lines("GUEST-CPUS ") == ["2"], f"CPUs seen: {r.lines('GUEST-CPUS ')}")
            mem = int(r.lines("GUEST-MEMTOTAL-KB ")[0])
            expect(400_000 < mem <= 512 * 1024, f"MemTotal {mem} kB for --mem 512")
            want = f"{CMDLINE} mvmm.test=poweroff mvmm.fmt={fmt}"
            expect(r.lines("GUEST-CMDLINE ") == [want], f"cmdline {r.lines('GUEST-CMDLINE ')}")
            expect(r.lines("GUEST-INITRD ") == ["micro-vmm-e2e-initrd"], "initrd id")
            expect(not r.lines("GUEST-MODULE-FAILED"), f"modules: {r.lines('GUEST-MODULE-FAILED')}")
            expect(any("guest powered off" in l for l in r.err), "stderr reason")

        out.append(Scenario(f"{fmt}-boot", base + initrd + [
            "--cpus", "2", "--mem", "512",
            "--cmdline", f"{CMDLINE} mvmm.test=poweroff mvmm.fmt={fmt}"], boot_check))

        def reboot_check(r):
            expect(r.rc == 32, f"exit {r.rc}, want 32 (reboot -f)")
            expect(r.lines("GUEST-UP"), "guest did not reach userspace")

        out.append(Scenario(f"{fmt}-reboot", base + initrd + [
            "--cmdline", f"{CMDLINE} mvmm.test=reboot"], reboot_check))

        def panic_check(r):
            expect(r.lines("GUEST-PVPANIC ") == ["1"], f"pvpanic bound: {r.lines('GUEST-PVPANIC ')}")
            expect(r.rc == 34, f"exit {r.rc}, want 34 (pvpanic)")

        out.append(Scenario(f"{fmt}-panic", base + initrd + [
            "--cmdline", f"{CMDLINE} mvmm.test=panic"], panic_check))

        def noroot_check(r):
            expect(r.rc == 32, f"exit {r.rc}, want 32 (panic=-1 resets)")
            expect(any("Kernel panic" in l for l in r.out), "no kernel panic message")

        out.append(Scenario(f"{fmt}-noroot", base + [
            "--cmdline", f"{CMDLINE} root=/dev/vda"], noroot_check))

        def shell_check(r):
            expect("HELLO-42" in [l.strip() for l in r.out], "the shell's answer did not come back")
            expect(r.rc == 0, f"exit {r.rc}, want 0 (poweroff -f typed on stdin)")

        feed = ("waitfor $out GUEST-SHELL-READY; sleep 1; echo 'echo HELLO-$((40+2))'; "
                "waitfor $out '^HELLO-42'; sleep 0.5; echo 'poweroff -f'")
        out.append(Scenario(f"{fmt}-stdin", [
            "run", "--kernel", image, "--console-in", "stdin", *initrd,
            "--cmdline", f"{CMDLINE} mvmm.test=shell"], shell_check, feed=feed))

        def log_check(r):
            expect(r.rc == 0, f"exit {r.rc}, want 0")
            expect(any("GUEST-LOG-LINE from ttyS1" in l for l in r.log), f"--log file: {r.log}")
            expect(not any("GUEST-LOG-LINE" in l for l in r.out), "ttyS1 leaked to the console")

        out.append(Scenario(f"{fmt}-log", base + initrd + [
            "--log", f"file:$TMP/{fmt}-log.log",
            "--cmdline", f"{CMDLINE} mvmm.test=log"], log_check))
    return out


def execute(kernel, l2, todo, timeout, head=""):
    """Runs the scenarios `todo` with the files `l2` (in $L2) where Linux boots, after the
    shell lines `head`; prints each verdict; returns (passed, failed)."""
    # $out in a feed refers to the scenario's own output file (set by `scenario`).
    script = SCRIPT_HEAD + head + "\n".join(s.shell() for s in todo) + "\n"
    text = nested.run_script(kernel, l2, script, timeout)
    results = parse(text, [s.name for s in todo])
    # No retries: a guest that hangs until the scenario's timeout (killed: exit 137) fails
    # like any other wrong result; its console, stderr and state dump are printed below.
    passed = failed = 0
    for s in todo:
        r = results.get(s.name)
        if r is None:
            print(f"FAIL {s.name}: no result (L1 log tail below)")
            print("\n".join(text.splitlines()[-40:]))
            failed += 1
            continue
        try:
            s.check(r)
            print(f"PASS {s.name:<18} {r.secs:6.1f} s  exit {r.rc}")
            passed += 1
        except (AssertionError, IndexError, ValueError) as e:
            hung = " (hung until the scenario's timeout)" if r.rc == 137 else ""
            print(f"FAIL {s.name:<18} {r.secs:6.1f} s  exit {r.rc}{hung}: {e}")
            for kind, lines in (("out", r.out), ("err", r.err), ("log", r.log), ("post", r.post)):
                for l in lines[-25:]:
                    print(f"    {kind}| {l}")
            failed += 1
    return passed, failed


def select(doc, all_scenarios):
    """The command line (--only, --timeout) and the scenarios it selects."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="", help="run only scenarios whose name contains this")
    ap.add_argument("--timeout", type=int, default=1500, help="wall-clock limit for all of it")
    args = ap.parse_args()
    return args, [s for s in all_scenarios if args.only in s.name]


def main():
    args, todo = select(__doc__, scenarios())
    t0 = time.monotonic()
    kernel = nested.Kernel(nested.kernel_package())
    nested.log(f"guest kernel {kernel.pkg}")
    vsock_tool = nested.build_example("vsock_tool")
    l2 = {
        "bzImage": kernel.bzimage,
        "vmlinux": kernel.vmlinux,
        "initrd.gz": nested.l2_initrd(kernel, "micro-vmm-e2e-initrd",
                                      {"vsock_tool": vsock_tool}),
        "vsock_tool": vsock_tool,
        **disk_files(),
    }
    passed, failed = execute(kernel, l2, todo, args.timeout)
    print(f"e2e wall time {time.monotonic() - t0:.0f} s")
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
