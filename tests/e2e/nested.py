"""The nested test host: real Linux guests for micro-vmm on machines without VMX/SVM.

This machine kind's /dev/kvm (kvm_pvm) cannot boot Linux. A QEMU TCG VM whose emulated CPU
has AMD SVM can: inside it (L1), kvm_amd gives a real /dev/kvm, and a static micro-vmm boots
Debian's kernel there as an L2 guest. Where /dev/kvm is hardware-backed, the same scenario
script runs directly on the host instead.

Everything comes from Debian packages (`apt-get download`), cached in ~/.cache/micro-vmm:
  - the cloud kernel (L1 kernel, L2 bzImage, L2 ELF vmlinux extracted from it, modules),
  - busybox-static (both initramfs userspaces).
"""

import glob
import gzip
import io
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "micro-vmm")
KERNEL_META = "linux-image-cloud-amd64"


class NestedError(Exception):
    pass


def log(msg):
    print(f"[nested] {msg}", flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def hardware_kvm():
    """True when /dev/kvm is VMX/SVM-backed (guests run directly, no QEMU layer)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = [l for l in f if l.startswith("flags")]
        return bool(flags) and any(w in ("vmx", "svm") for w in flags[0].split())
    except OSError:
        return False


# ---------------------------------------------------------------- Debian packages

def _apt_update_once():
    stamp = os.path.join(CACHE, "apt-updated")
    if os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < 86400:
        return
    run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    open(stamp, "w").close()


def kernel_package():
    """The versioned cloud kernel package the metapackage points to (cached answer if offline)."""
    os.makedirs(CACHE, exist_ok=True)
    note = os.path.join(CACHE, "kernel-package")
    try:
        out = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True,
                             text=True, check=True).stdout
        m = re.search(r"Depends: (linux-image-\S+-cloud-amd64)", out)
        if not m:
            _apt_update_once()
            out = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True,
                                 text=True, check=True).stdout
            m = re.search(r"Depends: (linux-image-\S+-cloud-amd64)", out)
        if m:
            with open(note, "w") as f:
                f.write(m.group(1))
            return m.group(1)
    except (OSError, subprocess.CalledProcessError):
        pass
    if os.path.exists(note):
        return open(note).read().strip()
    raise NestedError(f"cannot resolve {KERNEL_META} (apt-cache depends failed, nothing cached)")


def fetch_deb(pkg):
    """Path of the cached .deb of `pkg`, downloading it with apt-get when missing."""
    debs = os.path.join(CACHE, "debs")
    os.makedirs(debs, exist_ok=True)
    found = sorted(glob.glob(os.path.join(debs, f"{pkg}_*.deb")))
    if found:
        return found[-1]
    log(f"apt-get download {pkg}")
    tmp = tempfile.mkdtemp(prefix="mvmm-apt-")
    os.chmod(tmp, 0o777)  # apt's _apt user writes here
    try:
        try:
            run(["apt-get", "download", "-q", pkg], cwd=tmp, stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            _apt_update_once()
            run(["apt-get", "download", "-q", pkg], cwd=tmp, stdout=subprocess.DEVNULL)
        got = glob.glob(os.path.join(tmp, f"{pkg}_*.deb"))
        if not got:
            raise NestedError(f"apt-get download {pkg} produced no .deb")
        dest = os.path.join(debs, os.path.basename(got[0]))
        shutil.move(got[0], dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack(deb):
    """The package's files, unpacked once into the cache."""
    dest = os.path.join(CACHE, "pkgs", os.path.basename(deb)[:-4])
    if not os.path.isdir(dest):
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        run(["dpkg-deb", "-x", deb, tmp])
        os.rename(tmp, dest)
    return dest


class Kernel:
    """A Debian kernel package: bzImage, ELF vmlinux (extracted), modules."""

    def __init__(self, pkg):
        self.pkg = pkg
        self.version = pkg[len("linux-image-"):]
        self.root = unpack(fetch_deb(pkg))
        self.bzimage = os.path.join(self.root, "boot", f"vmlinuz-{self.version}")
        self.moddir = os.path.join(self.root, "lib", "modules", self.version, "kernel")
        self.vmlinux = extract_vmlinux(self.bzimage)

    def module_path(self, name):
        """The module's file (.ko or .ko.xz); module names use - and _ interchangeably."""
        for n in dict.fromkeys((name, name.replace("-", "_"), name.replace("_", "-"))):
            hits = glob.glob(os.path.join(self.moddir, "**", f"{n}.ko*"), recursive=True)
            if hits:
                return hits[0]
        raise NestedError(f"module {name} not in {self.pkg}")

    def module_bytes(self, name):
        path = self.module_path(name)
        data = open(path, "rb").read()
        if path.endswith(".xz"):
            import lzma
            data = lzma.decompress(data)
        return data

    def modules_in_load_order(self, names):
        """`names` plus their dependencies (from each module's .modinfo), deps first."""
        order, seen = [], set()

        def visit(n):
            key = n.replace("-", "_")
            if key in seen:
                return
            seen.add(key)
            data = self.module_bytes(n)
            m = re.search(rb"\x00depends=([^\x00]*)\x00", data)
            deps = [d for d in (m.group(1).decode().split(",") if m else []) if d]
            for d in deps:
                visit(d)
            order.append(n)

        for n in names:
            visit(n)
        return order


def extract_vmlinux(bzimage):
    """The ELF vmlinux inside a bzImage (LZ4 payload, as Debian builds it), cached."""
    out = bzimage + ".vmlinux"
    if os.path.exists(out):
        return out
    data = open(bzimage, "rb").read()
    setup_sects = data[0x1f1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start:start + payload_length]
    if payload[:4] != b"\x02\x21\x4c\x18":
        raise NestedError(f"{bzimage}: payload is not LZ4 (legacy) compressed")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        subprocess.run(["lz4", "-dc"], input=payload, stdout=f, stderr=subprocess.DEVNULL)
    with open(tmp, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise NestedError(f"{bzimage}: extracted payload is not an ELF (is lz4 installed?)")
    os.rename(tmp, out)
    return out


def busybox():
    root = unpack(fetch_deb("busybox-static"))
    return os.path.join(root, "bin", "busybox")


# ---------------------------------------------------------------- initramfs (cpio newc)

class Cpio:
    """A newc cpio archive written in Python (no cpio binary needed)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\x00" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.dirs:
                self.dirs.add(p)
                self._entry(p, 0o040755)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            self.dir(os.path.dirname(path))
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        if "/" in path:
            self.dir(os.path.dirname(path))
        self._entry(path, 0o120777, target.encode())

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def l2_initrd(kernel, initrd_id, extra_bins=None):
    """The guest initramfs from resources/guest: its init, busybox, the modules in order, and
    `extra_bins` ({name: host path}) in /bin."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "etc", "tmp", "lib/modules"):
        c.dir(d)
    c.file("init", open(os.path.join(ROOT, "resources/guest/init"), "rb").read(), 0o755)
    c.file("bin/busybox", open(busybox(), "rb").read(), 0o755)
    c.symlink("bin/sh", "busybox")
    for name, path in (extra_bins or {}).items():
        c.file(f"bin/{name}", open(path, "rb").read(), 0o755)
    c.file("etc/initrd-id", (initrd_id + "\n").encode())
    add_modules(c, kernel, "resources/guest/modules")
    return gzip.compress(c.finish(), compresslevel=6)


def add_modules(c, kernel, list_file):
    """The modules named in `list_file` (repo-relative) and their dependencies, in load order,
    at /lib/modules/<name>.ko, with the order in /lib/modules/order."""
    wanted = [l.strip() for l in open(os.path.join(ROOT, list_file))
              if l.strip() and not l.startswith("#")]
    order = kernel.modules_in_load_order(wanted)
    for m in order:
        c.file(f"lib/modules/{m}.ko", kernel.module_bytes(m))
    c.file("lib/modules/order", ("\n".join(order) + "\n").encode())


def build_agent():
    """The static guest agent (micro-vmm-agent), built from this repo."""
    return build_static("--bin", "micro-vmm-agent")


def build_static(kind, name):
    """A static (crt-static) release build of `--bin NAME` or `--example NAME`; its path."""
    env = dict(os.environ)
    env["RUSTFLAGS"] = env.get("RUSTFLAGS", "") + " -C target-feature=+crt-static"
    run(["cargo", "build", "--release", "--quiet", "--target", "x86_64-unknown-linux-gnu",
         kind, name], cwd=ROOT, env=env)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    sub = "examples/" if kind == "--example" else ""
    return os.path.join(target, "x86_64-unknown-linux-gnu/release", sub + name)


def app_initrd(kernel, agent):
    """The app guest's initramfs: the agent as /init (and /bin/vm_payload), busybox (the
    payload's /bin/sh, and mke2fs for the storage), the modules of resources/guest/app-modules
    in load order."""
    c = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", "mnt", "lib/modules"):
        c.dir(d)
    c.file("init", open(agent, "rb").read(), 0o755)
    c.symlink("bin/vm_payload", "/init")
    c.file("bin/busybox", open(busybox(), "rb").read(), 0o755)
    for applet in ("sh", "cat", "echo", "ls", "sleep", "mke2fs"):
        c.symlink(f"bin/{applet}", "busybox")
    add_modules(c, kernel, "resources/guest/app-modules")
    return gzip.compress(c.finish(), compresslevel=6)


def write_app_guest(dest):
    """The app guest's assets in `dest`, as the built-in OS config names them: vmlinux (ELF,
    the faster boot), vmlinuz (bzImage) and initrd.img."""
    kernel = Kernel(kernel_package())
    os.makedirs(dest, exist_ok=True)
    data = app_initrd(kernel, build_agent())
    for name, content in (("vmlinux", kernel.vmlinux), ("vmlinuz", kernel.bzimage),
                          ("initrd.img", data)):
        tmp = os.path.join(dest, name + ".tmp")
        if isinstance(content, bytes):
            open(tmp, "wb").write(content)
        else:
            shutil.copyfile(content, tmp)
        os.replace(tmp, os.path.join(dest, name))
    return kernel


def build_static_vmm():
    """The static micro-vmm to test: $MICRO_VMM_BIN if set (a prebuilt static binary), else
    built with scripts/build-static."""
    prebuilt = os.environ.get("MICRO_VMM_BIN")
    if prebuilt:
        return prebuilt
    out = subprocess.run([os.path.join(ROOT, "scripts/build-static")], check=True,
                         capture_output=True, text=True).stdout.strip()
    return out


def build_example(name):
    """A static example binary from this repo (for tools that run inside L1)."""
    return build_static("--example", name)


# ---------------------------------------------------------------- the host layer (L1)

def l1_initrd(kernel, files, init_script):
    """L1 initramfs: busybox, kvm + kvm-amd modules, then `files` {path in L1: bytes|host path}.
    Not compressed: TCG would spend seconds decompressing the L2 kernels."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib/modules", "l2"):
        c.dir(d)
    c.file("init", init_script.encode(), 0o755)
    c.file("bin/busybox", open(busybox(), "rb").read(), 0o755)
    kvm_order = kernel.modules_in_load_order(["kvm-amd"])
    for m in kvm_order:
        c.file(f"lib/modules/{m}.ko", kernel.module_bytes(m))
    c.file("lib/modules/order", ("\n".join(kvm_order) + "\n").encode())
    for path, content in files.items():
        data = content if isinstance(content, bytes) else open(content, "rb").read()
        executable = path.startswith(("bin/", "lib")) or data[:4] == b"\x7fELF"
        mode = 0o755 if executable else 0o644
        c.file(path, data, mode)
    return c.finish()


# The L1 CPU: an AMD model with SVM and nested paging. (`-cpu max` also works, but with two
# L2 vCPUs its L1 kernel crashed here: a stack-guard hit in exc_page_fault on a vCPU thread.)
L1_CPU = "EPYC,+svm,+npt"


def run_l1(kernel, initrd_bytes, timeout, append="", mem_mib=4096):
    """Boots the L1 host under QEMU TCG (an AMD CPU with SVM); returns (log text, seconds)."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise NestedError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    work = tempfile.mkdtemp(prefix="mvmm-l1-")
    try:
        initrd = os.path.join(work, "l1.cpio")
        with open(initrd, "wb") as f:
            f.write(initrd_bytes)
        cpu = os.environ.get("MVMM_L1_CPU", L1_CPU)
        cmd = [qemu, "-accel", "tcg", "-cpu", cpu, "-smp", "2", "-m", str(mem_mib),
               "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
               "-nodefaults", "-kernel", kernel.bzimage, "-initrd", initrd,
               "-append", f"console=ttyS0 panic=-1 quiet {append}"]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout)
            out = p.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") + "\n=== L1 TIMEOUT\n"
        return out, time.monotonic() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)


L1_INIT_HEAD = r"""#!/bin/busybox sh
# L1 /init (generated by tests/e2e/nested.py): loads kvm-amd, then runs the scenario script.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
while read -r m; do insmod /lib/modules/$m.ko 2>/dev/null || echo "=== L1 insmod $m failed"; done < /lib/modules/order
if [ ! -c /dev/kvm ]; then echo "=== L1 NO-KVM"; poweroff -f; fi
echo "=== L1 READY uptime=$(cut -d' ' -f1 /proc/uptime)"
"""

L1_INIT_TAIL = r"""
echo "=== L1 DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


def binary_with_libraries(path, name):
    """`path` at /bin/`name` in L1 plus the shared libraries `ldd` says it needs, at the paths
    its loader expects (for a dynamically linked peer VMM such as Firecracker)."""
    files = {f"bin/{name}": path}
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"(/\S+)", line.split("=>")[-1])
        if m and os.path.exists(m.group(1)):
            files[m.group(1).lstrip("/")] = m.group(1)
    return files


def run_nested(kernel, l2_files, script, timeout, extra_l1=None):
    """Runs `script` (shell, with $MVMM, $L2 and $TMP set) inside L1; returns the L1 log.
    `extra_l1` adds files at other L1 paths (for example a peer VMM and its libraries)."""
    vmm = build_static_vmm()
    files = {"bin/micro-vmm": vmm}
    files.update({f"l2/{k}": v for k, v in l2_files.items()})
    files.update(extra_l1 or {})
    init = L1_INIT_HEAD + "MVMM=/bin/micro-vmm\nL2=/l2\nTMP=/tmp\n" + script + L1_INIT_TAIL
    log(f"booting the L1 test host (QEMU TCG, -cpu {os.environ.get('MVMM_L1_CPU', L1_CPU)})")
    out, secs = run_l1(kernel, l1_initrd(kernel, files, init), timeout)
    log(f"L1 ran {secs:.1f} s")
    if "=== L1 NO-KVM" in out:
        raise NestedError("L1 has no /dev/kvm (kvm-amd did not load):\n" + out[-3000:])
    if "=== L1 READY" not in out:
        raise NestedError("L1 did not come up:\n" + out[-3000:])
    return out


def run_direct(l2_files, script, timeout):
    """Runs `script` on this host (hardware KVM): same script, host paths."""
    vmm = build_static_vmm()
    work = tempfile.mkdtemp(prefix="mvmm-direct-")
    try:
        l2 = os.path.join(work, "l2")
        os.makedirs(l2)
        for name, content in l2_files.items():
            dest = os.path.join(l2, name)
            if isinstance(content, bytes):
                open(dest, "wb").write(content)
            else:
                os.symlink(content, dest)
        full = f"MVMM={vmm}\nL2={l2}\nTMP={work}\n" + script
        p = subprocess.run(["sh", "-c", full], capture_output=True, timeout=timeout)
        return p.stdout.decode(errors="replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_script(kernel, l2_files, script, timeout):
    if hardware_kvm():
        log("hardware KVM: running the guests directly on this host")
        return run_direct(l2_files, script, timeout)
    log("no VMX/SVM here: running the guests inside the nested test host")
    return run_nested(kernel, l2_files, script, timeout)


# ---------------------------------------------------------------- command line

def guest_files():
    """The Debian guest: kernel (bzImage and ELF vmlinux) and the project's initramfs."""
    kernel = Kernel(kernel_package())
    return kernel, {
        "bzImage": kernel.bzimage,
        "vmlinux": kernel.vmlinux,
        "initrd.gz": l2_initrd(kernel, "micro-vmm-guest"),
    }


def run_app(args, timeout):
    """`micro-vmm --app APK IDSIG CONFIG [FLAGS]`: on a VMX/SVM host directly (the guest in
    ~/.cache/micro-vmm/guest); otherwise inside the nested test host, with the APK and the
    guest copied into L1 and the idsig written back here. Returns micro-vmm's exit code."""
    if len(args) < 3:
        raise NestedError("usage: nested.py app APK IDSIG CONFIG_PATH [micro-vmm flags]")
    apk, idsig, config_path, flags = args[0], args[1], args[2], args[3:]
    guest = os.path.join(CACHE, "guest")
    kernel = write_app_guest(guest)
    if hardware_kvm():
        log("hardware KVM: running micro-vmm --app directly")
        cmd = [build_static_vmm(), "--app", apk, idsig, config_path, "--guest-dir", guest]
        return subprocess.run(cmd + flags).returncode
    log("no VMX/SVM here: running micro-vmm --app inside the nested test host "
        "(QEMU TCG; the console appears when L1 finishes)")
    files = {"vmlinux": os.path.join(guest, "vmlinux"),
             "initrd.img": os.path.join(guest, "initrd.img"),
             "app.apk": apk}
    have_idsig = os.path.exists(idsig) and os.path.getsize(idsig) > 0
    if have_idsig:
        files["app.idsig"] = idsig
    quoted = " ".join("'" + x.replace("'", "'\\''") + "'" for x in flags)
    script = (("" if have_idsig else ": > $L2/app.idsig\n") +
              f'"$MVMM" --app $L2/app.apk $L2/app.idsig \'{config_path}\' --guest-dir $L2 '
              f'{quoted} < /dev/null > $TMP/run.out 2>&1; rc=$?\n'
              'sed "s/^/| /" $TMP/run.out\necho "=== micro-vmm exit $rc"\n'
              'echo "=== idsig $(od -An -tx1 -v $L2/app.idsig | tr -d \' \\n\')"\n')
    text = run_nested(kernel, files, script, timeout)
    print("\n".join(l[2:] for l in text.splitlines() if l.startswith("| ")))
    m = re.search(r"^=== idsig ([0-9a-f]*)", text, re.M)
    if m and m.group(1) and not have_idsig:
        with open(idsig, "wb") as f:
            f.write(bytes.fromhex(m.group(1)))
    m = re.search(r"^=== micro-vmm exit (\d+)", text, re.M)
    if not m:
        print("\n".join(text.splitlines()[-30:]))
        return 1
    return int(m.group(1))


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(
        prog="tests/e2e/nested.py",
        description="Debian guest files, and micro-vmm runs where Linux can boot.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write bzImage, vmlinux and initrd.gz to DIR")
    p.add_argument("dir")
    r = sub.add_parser("run", help="run micro-vmm with ARGS where Linux boots: directly on "
                       "VMX/SVM hosts, otherwise in the nested test host. In ARGS, $L2 is "
                       "the directory holding bzImage, vmlinux and initrd.gz")
    r.add_argument("--timeout", type=int, default=900)
    r.add_argument("args", nargs=argparse.REMAINDER)
    g = sub.add_parser("guest", help="build the app guest (kernel, initramfs with the agent) "
                       "into DIR (default: ~/.cache/micro-vmm/guest)")
    g.add_argument("dir", nargs="?", default=os.path.join(CACHE, "guest"))
    ap_ = sub.add_parser("app", help="run `micro-vmm --app APK IDSIG CONFIG_PATH [FLAGS]` "
                         "where Linux boots: directly on VMX/SVM hosts, otherwise in the "
                         "nested test host")
    ap_.add_argument("--timeout", type=int, default=900)
    ap_.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.cmd == "guest":
        write_app_guest(a.dir)
        print(a.dir)
        return 0
    if a.cmd == "app":
        return run_app([x for x in a.args if x != "--"], a.timeout)
    kernel, files = guest_files()
    if a.cmd == "prepare":
        os.makedirs(a.dir, exist_ok=True)
        for name, content in files.items():
            dest = os.path.join(a.dir, name)
            if isinstance(content, bytes):
                open(dest, "wb").write(content)
            else:
                shutil.copyfile(content, dest)
            print(dest)
        return 0
    args = [x for x in a.args if x != "--"]
    quoted = " ".join('"' + x + '"' if "$" in x else "'" + x.replace("'", "'\\''") + "'"
                      for x in args)
    script = (f'"$MVMM" {quoted} < /dev/null > $TMP/run.out 2>&1; rc=$?\n'
              'sed "s/^/| /" $TMP/run.out\necho "=== micro-vmm exit $rc"\n')
    text = run_script(kernel, files, script, a.timeout)
    out = [l[2:] for l in text.splitlines() if l.startswith("| ")]
    print("\n".join(out))
    m = re.search(r"^=== micro-vmm exit (\d+)", text, re.M)
    if not m:
        print("\n".join(text.splitlines()[-30:]))
        return 1
    print(f"micro-vmm exited {m.group(1)}")
    return int(m.group(1))


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
