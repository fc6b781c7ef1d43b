#!/usr/bin/env python3
"""bench/payload: the host-side payload preparation costs.

Sections (run all, or one with --only NAME):
  idsig  `micro-vmm create-idsig` and `verify-idsig` against `apksigner sign
         --v4-signing-enabled true` on the same 1 GiB APK (a real signed zip: a manifest
         entry and one stored 1 GiB entry), page cache warm. apksigner is timed twice: with
         its defaults (v1 + v2 + v3 signing, plus v4), and with only v3 + v4 (v4 needs a v2
         or v3 digest), the closest to what create-idsig does. Also checks that our hashing
         info and Merkle tree are byte-identical to apksigner's.

  disk   `micro-vmm payload-disk` (what `--app` does before the VM: read the config from
         the APK, check the idsig, write the metadata, assemble the composite payload disk)
         for 1 MiB, 100 MiB and 1 GiB APKs whose idsig exists: the cost must not grow with
         the APK, since nothing is copied or hashed.

  bench/payload.py [--only idsig|disk] [--runs N] [--size-mib MIB] [--keep DIR]

Needs apksigner and openssl (Debian packages). Timings on a shared machine are noisy:
compare rows of one run only.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def build():
    """The release binary (cargo build --release), honouring CARGO_TARGET_DIR."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "micro-vmm")


def timed(commands, runs):
    """For each argv in `commands` (each run must succeed): median, min and max wall-clock
    seconds over `runs` runs, and the median CPU seconds (user + system, all threads), which
    a busy machine disturbs less. The commands take turns, so load changes hit all alike."""
    times = [[] for _ in commands]
    cpu = [[] for _ in commands]
    for _ in range(runs):
        for i, argv in enumerate(commands):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times[i].append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[i].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return [(statistics.median(t), min(t), max(t), statistics.median(c))
            for t, c in zip(times, cpu)]


def table(title, rows, size):
    """rows: (name, (median, min, max, cpu)); the first row is the reference for the ratio."""
    print(f"\n{title}")
    print(f"{'tool':<44} {'median s':>9} {'min s':>7} {'max s':>7} {'GiB/s':>7} {'x time':>7} "
          f"{'CPU s':>7}")
    ref = rows[0][1][0]
    for name, (med, lo, hi, cpu) in rows:
        print(f"{name:<44} {med:>9.3f} {lo:>7.3f} {hi:>7.3f} {size / GIB / med:>7.2f} "
              f"{med / ref:>7.2f} {cpu:>7.2f}")


# ----------------------------------------------------------------------------------------
# idsig


def make_apk(path, size):
    """An unsigned APK of about `size` bytes: a manifest entry and one stored entry of
    pseudo-random 1 MiB blocks (each block distinct)."""
    block = os.urandom(1 << 20)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("AndroidManifest.xml", b"<manifest package=\"com.example.bench\"/>\n")
        with z.open(zipfile.ZipInfo("assets/data.bin"), "w") as f:
            for i in range(size >> 20):
                f.write(struct.pack("<Q", i) + block[8:])


def key_pair(work):
    pem, cert, pk8 = (os.path.join(work, n) for n in ("key.pem", "cert.der", "key.pk8"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pem,
                    "-outform", "DER", "-out", cert, "-days", "3650", "-subj", "/CN=bench"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", pem, "-outform", "DER",
                    "-out", pk8], check=True, capture_output=True)
    return pk8, cert


def idsig_parts(path):
    """(version + hashing info bytes, Merkle tree bytes) of an .idsig."""
    data = open(path, "rb").read()
    hashing_end = 8 + struct.unpack_from("<I", data, 4)[0]
    signing_size = struct.unpack_from("<I", data, hashing_end)[0]
    tree_at = hashing_end + 4 + signing_size
    tree_size = struct.unpack_from("<I", data, tree_at)[0]
    return data[:hashing_end], data[tree_at + 4:tree_at + 4 + tree_size]


def bench_idsig(binary, work, runs, size_mib):
    apksigner = shutil.which("apksigner")
    if not apksigner:
        print("idsig: apksigner is not installed (apt-get install apksigner)", file=sys.stderr)
        return 1
    unsigned = os.path.join(work, "unsigned.apk")
    signed = os.path.join(work, "signed.apk")
    make_apk(unsigned, size_mib << 20)
    key, cert = key_pair(work)
    sign = [apksigner, "sign", "--key", key, "--cert", cert, "--min-sdk-version", "24",
            "--v4-signing-enabled", "true", "--in", unsigned, "--out", signed]
    sign_v3_v4 = sign[:2] + ["--v1-signing-enabled", "false", "--v2-signing-enabled", "false",
                             "--v3-signing-enabled", "true"] + sign[2:]
    # apksigner first, so the signed APK exists for create-idsig; each run rewrites it
    # identically (same key, same input).
    t_v34, t_full = timed([sign_v3_v4, sign], runs)
    theirs = os.path.join(work, "theirs.idsig")
    shutil.copy(signed + ".idsig", theirs)
    size = os.path.getsize(signed)
    ours = os.path.join(work, "ours.idsig")
    # Write back apksigner's 1 GiB output now, so kernel writeback does not compete with the
    # timed runs for the 2 CPUs.
    subprocess.run(["sync"], check=True)
    t_create, t_verify = timed([[binary, "create-idsig", signed, ours],
                                [binary, "verify-idsig", signed, theirs]], runs)
    rows = [("micro-vmm create-idsig", t_create),
            ("micro-vmm verify-idsig (apksigner's idsig)", t_verify),
            ("apksigner sign, v3 + v4 only", t_v34),
            ("apksigner sign, defaults (v1+v2+v3) + v4", t_full)]
    table(f"bench/payload idsig: {size} byte APK ({size / GIB:.2f} GiB), page cache warm, "
          f"{runs} runs, {os.cpu_count()} CPUs", rows, size)
    same = idsig_parts(ours) == idsig_parts(theirs)
    print(f"hashing info and Merkle tree identical to apksigner's: {'yes' if same else 'NO'}")
    return 0 if same else 1


def bench_disk(binary, work, runs, _size_mib):
    """payload-disk build time against APK size (the idsig made beforehand, untimed)."""
    config = b'{"task": {"type": "executable", "command": "/mnt/apk/bin/run"}}'
    rows = []
    for mib in (1, 100, 1024):
        apk = os.path.join(work, f"disk-{mib}.apk")
        make_apk(apk, mib << 20)
        with zipfile.ZipFile(apk, "a") as z:
            z.writestr("assets/vm_config.json", config)
        # Signed, as real apps are: the idsig's apk_digest then tells a current idsig without
        # hashing the APK (an unsigned APK's idsig is rehashed on every run, as Android 13 did).
        key, cert = key_pair(work)
        subprocess.run(["apksigner", "sign", "--key", key, "--cert", cert, "--min-sdk-version",
                        "33", "--v1-signing-enabled", "false", "--v4-signing-enabled", "false",
                        apk], check=True, capture_output=True)
        idsig = apk + ".idsig"
        subprocess.run([binary, "create-idsig", apk, idsig], check=True, capture_output=True)
        out = os.path.join(work, f"disk-{mib}")
        os.makedirs(out, exist_ok=True)
        inner = []
        for _ in range(max(runs, 5)):
            r = subprocess.run([binary, "payload-disk", apk, idsig, "assets/vm_config.json", out],
                               check=True, capture_output=True, text=True)
            m = re.search(r"\(\d+ bytes, ([\d.]+) ms\)", r.stderr)
            inner.append(float(m.group(1)) if m else float("nan"))
        (med, lo, hi, cpu), = timed([[binary, "payload-disk", apk, idsig,
                                      "assets/vm_config.json", out]], max(runs, 5))
        rows.append((mib, statistics.median(inner), med * 1000, lo * 1000, hi * 1000))
        os.unlink(apk)
    print("\npayload disk build (micro-vmm payload-disk; idsig already made)")
    print(f"{'APK':>9} {'inside ms':>10} {'process ms':>11} {'min':>7} {'max':>7}")
    for mib, inner_ms, med, lo, hi in rows:
        print(f"{mib:>6} MiB {inner_ms:>10.2f} {med:>11.2f} {lo:>7.2f} {hi:>7.2f}")
    ratio = rows[-1][2] / rows[0][2]
    print(f"1 GiB / 1 MiB build time (process): {ratio:.2f}x")
    return 0


SECTIONS = {
    "idsig": bench_idsig,
    "disk": bench_disk,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024, help="APK size (idsig section)")
    ap.add_argument("--keep", help="work directory to use and keep (default: a temporary one)")
    args = ap.parse_args()
    binary = build()
    work = args.keep or tempfile.mkdtemp(prefix="mvmm-bench-payload-")
    os.makedirs(work, exist_ok=True)
    status = 0
    try:
        for name, fn in SECTIONS.items():
            if args.only in (None, name):
                status |= fn(binary, work, args.runs, args.size_mib)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
