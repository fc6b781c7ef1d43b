#!/usr/bin/env python3
"""End-to-end scenarios for `micro-vmm --app`: the app guest (Debian's kernel + the project's
agent) runs payloads built from resources/examples, where Linux boots (the nested test host
here, directly on VMX/SVM hosts). Prints a verdict per scenario; exits non-zero on a failure.

  tests/e2e/app.py [--only SUBSTRING] [--timeout SECONDS]
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nested  # noqa: E402
from run import Scenario, execute, expect, select  # noqa: E402

ROOT = nested.ROOT
BUILD_APP = os.path.join(ROOT, "resources/examples/build-app.py")
CONFIG = "assets/vm_config.json"
# Absolute path (the same in L1 and on a direct host) of the extra APK named by a config.
EXTRA_APK = "/tmp/mvmm-e2e-extra.apk"

# Every run gets its private directory under $TMP/apptmp, which must be empty afterwards.
HEAD = f"""
export TMPDIR=$TMP/apptmp; mkdir -p $TMPDIR
cp $L2/extra-lib.apk {EXTRA_APK}
leftovers() {{ echo "leftovers=$(ls $TMPDIR | wc -l)"; }}
export MICRO_VMM_HOME=$TMP/home
cat > $TMP/life.json <<JSON
{{"apk": "$L2/life.apk", "config_path": "assets/vm_config.json",
  "encrypted_storage_bytes": 1048576, "guest_dir": "$L2"}}
JSON
wait_ready() {{  # NAME: until the VM's control socket says READY (bounded)
    i=0; st=
    while [ $i -lt 400 ]; do
        st=$("$MVMM" ctl $MICRO_VMM_HOME/vm/$1/control.sock status 2>/dev/null |
             grep -o '"state": *"[A-Z]*"' | grep -o '[A-Z][A-Z]*')
        [ "$st" = READY ] && break
        sleep 0.5; i=$((i + 1))
    done
    echo "$1 state $st"
}}
life_run() {{  # NAME N: run detached, wait for READY, echo over vsock, stop; print the results
    "$MVMM" vm run $1 --detach > /dev/null; echo "$1 run$2 rc=$?"
    wait_ready $1
    echo "$1 status-running $("$MVMM" vm status $1)"
    echo "$1 vsock $(echo hello-vsock | timeout 60 "$MVMM" vm connect-vsock $1 5555 2>/dev/null)"
    "$MVMM" vm stop $1 > /dev/null; echo "$1 stop$2 rc=$?"
    echo "$1 status-stopped $("$MVMM" vm status $1)"
    echo "$1 reason $(grep -o '"reason": *"[A-Z_]*"' $MICRO_VMM_HOME/vm/$1/last_stop.json | grep -o '[A-Z][A-Z_]*')"
    echo "$1 count $(grep -o 'LIFE-COUNT [0-9]*' $MICRO_VMM_HOME/vm/$1/console.log)"
}}
stop_app() {{  # SIGTERM to the processes whose command line names $1 (busybox has no pkill)
    for p in /proc/[0-9]*; do
        grep -q "$1" $p/cmdline 2>/dev/null && kill -TERM ${{p#/proc/}} 2>/dev/null
    done
}}
"""


def build_apps(work, vsock_tool):
    """The APKs (and apksigner's idsig) the scenarios run: {name in $L2: path}."""
    def payload(name, text):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + text)
        return path

    def config(name, cfg):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def app(name, *args):
        out = os.path.join(work, name)
        subprocess.run([sys.executable, BUILD_APP, out, *args], check=True,
                       stdout=subprocess.DEVNULL)
        return out

    task = {"type": "executable", "command": "/mnt/apk/bin/hello"}
    files = {
        "hello.apk": app("hello.apk", "--exit-code", "7"),
        "signed.apk": app("signed.apk", "--exit-code", "7", "--sign"),
        "badtype.apk": app("badtype.apk", "--config", config("badtype.json", {
            "task": {"type": "executable", "command": 5}})),
        "launcher.apk": app("launcher.apk", "--config", config("launcher.json", {
            "task": {"type": "microdroid_launcher", "command": "libpayload.so"}})),
        "crash.apk": app("crash.apk", "--payload", payload(
            "crash.sh", "echo CRASHING\nkill -SEGV $$\n")),
        "forever.apk": app("forever.apk", "--payload", payload(
            "forever.sh", "/bin/vm_payload ready\necho FOREVER-READY\nexec sleep 100000\n")),
        "storage.apk": app("storage.apk", "--payload", payload("storage.sh", (
            "f=/mnt/encryptedstore/count\n"
            "n=$(cat $f 2>/dev/null || echo 0); n=$((n + 1))\n"
            "echo $n > $f && sync && echo STORAGE-COUNT $n\n"))),
        "extra-lib.apk": app("extra-lib.apk", "--src", os.path.join(ROOT, "resources/examples"),
                             "--add", "assets/extra.txt=" + payload("extra.txt",
                                                                    "EXTRA-CONTENT-OK\n")),
        "extra.apk": app("extra.apk", "--config", config("extra.json", {
            "task": task, "extra_apks": [{"path": EXTRA_APK}]}), "--payload", payload(
            "extra.sh", "tail -n 1 /mnt/extra-apk/0/assets/extra.txt\n")),
    }
    files["life.apk"] = app("life.apk", "--add", f"bin/vsock_tool={vsock_tool}", "--payload",
                            payload("life.sh", (
                                "f=/mnt/encryptedstore/count\n"
                                "n=$(cat $f 2>/dev/null || echo 0); n=$((n + 1))\n"
                                "echo $n > $f && sync && echo LIFE-COUNT $n\n"
                                "/bin/vm_payload ready\n"
                                "exec /mnt/apk/bin/vsock_tool serve 5555\n")))
    files["signed.apk.idsig"] = files["signed.apk"] + ".idsig"
    # The tampered APK: one byte of the (deflated) manifest flipped after signing; the zip
    # still opens and the config still reads, so only the guest's verification catches it.
    tampered = os.path.join(work, "tampered.apk")
    data = bytearray(open(files["signed.apk"], "rb").read())
    with zipfile.ZipFile(files["signed.apk"]) as z:
        at = z.getinfo("AndroidManifest.xml").header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
    data[at + 30 + name_len + extra_len + 8] ^= 0xFF
    open(tampered, "wb").write(data)
    files["tampered.apk"] = tampered
    return files


def app_args(apk, idsig=None, *flags):
    return ["--app", f"$L2/{apk}", idsig or f"$TMP/{apk}.idsig", CONFIG, "--guest-dir", "$L2",
            *flags]


def events(r):
    return [l[len("micro-vmm: "):] for l in r.err if l.startswith("micro-vmm: ")]


def scenarios():
    out = []

    def sample(r):
        ev = events(r)
        expect(r.rc == 7, f"exit {r.rc}, want 7 (the sample's code)")
        expect(any(l.startswith("Hello from the micro-vmm sample payload") for l in r.out),
               "no greeting on the console")
        for want in ("payload started", "payload ready", "payload finished with exit code 7",
                     "VM stopped: SHUTDOWN"):
            expect(want in ev, f"missing event {want!r}: {ev}")
        order = [e for e in ev if e.startswith(("payload", "VM stopped"))]
        expect(order[0] == "payload started" and order[-1] == "VM stopped: SHUTDOWN",
               f"event order {order}")
        expect("leftovers=0" in r.post, f"temp dir left behind: {r.post}")

    out.append(Scenario("app-sample", app_args("hello.apk"), sample, post="leftovers",
                        timeout=300))

    def apksigner(r):
        expect(r.rc == 7, f"exit {r.rc}, want 7")
        expect("payload finished with exit code 7" in events(r), f"events {events(r)}")
        expect("idsig-unchanged" in r.post, f"apksigner's idsig was rewritten: {r.post}")

    out.append(Scenario("app-apksigner", app_args("signed.apk", "$TMP/signed.idsig"),
                        apksigner, timeout=300, post=(
                            "cmp -s $TMP/signed.idsig $L2/signed.apk.idsig && "
                            "echo idsig-unchanged")))
    # (The idsig is copied to $TMP first, by the head, so that a rewrite would show.)

    def tampered(r):
        ev = events(r)
        expect(r.rc == 213, f"exit {r.rc}, want 213 (MICRODROID_PAYLOAD_VERIFICATION_FAILED)")
        expect(any(e.startswith("error PAYLOAD_VERIFICATION_FAILED") for e in ev), f"{ev}")
        expect("VM stopped: MICRODROID_PAYLOAD_VERIFICATION_FAILED" in ev, f"{ev}")
        expect("payload started" not in ev, "the payload ran")
        expect(not any("Hello from" in l for l in r.out), "the payload ran")

    out.append(Scenario("app-tampered", app_args("tampered.apk", "$TMP/tampered.idsig"),
                        tampered, timeout=300))

    def badtype(r):
        ev = events(r)
        expect(r.rc == 214, f"exit {r.rc}, want 214 (MICRODROID_INVALID_PAYLOAD_CONFIG)")
        expect(any(e.startswith("error PAYLOAD_INVALID_CONFIG") and "task.command" in e
                   for e in ev), f"the error should name task.command: {ev}")
        expect("VM stopped: MICRODROID_INVALID_PAYLOAD_CONFIG" in ev, f"{ev}")

    out.append(Scenario("app-badtype", app_args("badtype.apk"), badtype, timeout=120))

    def launcher(r):
        ev = events(r)
        expect(r.rc == 214, f"exit {r.rc}, want 214 (reported by the guest)")
        expect(any(e.startswith("error PAYLOAD_INVALID_CONFIG") for e in ev), f"{ev}")
        expect("VM stopped: MICRODROID_INVALID_PAYLOAD_CONFIG" in ev, f"{ev}")
        expect(any("MICRODROID_INVALID_PAYLOAD_CONFIG" in l for l in r.log), f"ttyS1: {r.log}")

    out.append(Scenario("app-launcher", app_args(
        "launcher.apk", None, "--log", "file:$TMP/app-launcher.log"), launcher, timeout=300))

    def crash(r):
        expect(r.rc == 139, f"exit {r.rc}, want 139 (SIGSEGV)")
        expect("payload finished with exit code 139" in events(r), f"{events(r)}")
        expect("CRASHING" in [l.strip() for l in r.out], "payload output")

    out.append(Scenario("app-crash", app_args("crash.apk"), crash, timeout=300))

    def killed(r):
        ev = events(r)
        expect(r.rc == 201, f"exit {r.rc}, want 201 (KILLED)")
        expect("payload ready" in ev and "VM stopped: KILLED" in ev, f"{ev}")
        expect("leftovers=0" in r.post, f"temp dir left behind after SIGTERM: {r.post}")
        expect(r.secs < 150, f"took {r.secs:.0f} s: the SIGTERM did not stop it (the harness's "
               "timeout did)")

    out.append(Scenario("app-sigterm", app_args("forever.apk"), killed, timeout=300,
                        feed="waitfor $err 'payload ready'; stop_app forever.apk",
                        post="leftovers"))

    storage = ["--storage", "$TMP/storage.img", "--instance", "$TMP/instance.img"]

    def storage_run(n):
        def check(r):
            expect(r.rc == 0, f"exit {r.rc}, want 0")
            expect(f"STORAGE-COUNT {n}" in [l.strip() for l in r.out],
                   f"want STORAGE-COUNT {n}: {r.out[-5:]}")
        return check

    out.append(Scenario("app-storage1", app_args("storage.apk", None, *storage),
                        storage_run(1), timeout=300))
    out.append(Scenario("app-storage2", app_args("storage.apk", None, *storage),
                        storage_run(2), timeout=300))

    def extra(r):
        expect(r.rc == 0, f"exit {r.rc}, want 0")
        expect("EXTRA-CONTENT-OK" in [l.strip() for l in r.out], f"{r.out[-5:]}")

    out.append(Scenario("app-extra", app_args("extra.apk", None, "--extra-idsig",
                                              "$TMP/extra.idsig"), extra, timeout=300))
    def life(r):
        expect(r.rc == 0, f"vm create: exit {r.rc}")
        # The counter in the storage: run 1, the run that refuses delete, run 2, the import.
        for name, run, count in (("life", "1", 1), ("life", "2", 3), ("life2", "3", 4)):
            tag = f"{name}#{run} "
            got = dict(l[len(tag):].split(" ", 1) for l in r.post
                       if l.startswith(tag) and " " in l[len(tag):])
            expect(got.get("state") == "READY", f"{tag}: state {got.get('state')}: {r.post}")
            expect(got.get("status-running") == "running", f"{tag}: {got}")
            expect(got.get("vsock") == "hello-vsock", f"{tag}: connect-vsock echo: {got}")
            expect(got.get("status-stopped") == "stopped", f"{tag}: {got}")
            expect(got.get("reason") == "SHUTDOWN", f"{tag}: stop reason {got.get('reason')}")
            expect(got.get("count") == f"LIFE-COUNT {count}",
                   f"{tag}: storage counter {got.get('count')} (same instance and storage)")
        for want in ("export rc=0", "import rc=0", "delete rc=0", "status-deleted deleted",
                     "delete-running-refused"):
            expect(any(l.endswith(want) for l in r.post), f"missing {want!r}: {r.post}")

    # The full life of an app VM through the manager: create, run (READY, connect-vsock),
    # stop, run again with the same instance and storage, export, import under a new name,
    # run the import, delete.
    m = '"$MVMM" vm'
    out.append(Scenario("manager-life", ["vm", "create", "life", "--config", "$TMP/life.json"],
                        life, timeout=60, post=" ; ".join([
                            "life_run life 1 | sed 's/^life /life#1 /'",
                            f"{m} run life --detach > /dev/null",
                            "wait_ready life > /dev/null",
                            f"{m} delete life 2>/dev/null || echo life delete-running-refused",
                            f"{m} stop life > /dev/null",
                            "life_run life 2 | sed 's/^life /life#2 /'",
                            f'{m} export life $TMP/life-desc; echo "life export rc=$?"',
                            f'{m} import life2 $TMP/life-desc --trust-paths; echo "life import rc=$?"',
                            "life_run life2 3 | sed 's/^life2 /life2#3 /'",
                            f'{m} delete life; echo "life delete rc=$?"',
                            f'echo "life status-deleted $({m} status life)"'])))
    return out


def main():
    args, todo = select(__doc__, scenarios())
    t0 = time.monotonic()
    work = tempfile.mkdtemp(prefix="mvmm-e2e-app-")
    try:
        guest = os.path.join(work, "guest")
        kernel = nested.write_app_guest(guest)
        nested.log(f"guest kernel {kernel.pkg}")
        l2 = {"vmlinux": os.path.join(guest, "vmlinux"),
              "initrd.img": os.path.join(guest, "initrd.img"),
              **build_apps(work, nested.build_example("vsock_tool"))}
        # Read everything now: the work directory goes away before L1 is torn down.
        l2 = {k: open(v, "rb").read() for k, v in l2.items()}
        head = HEAD + "cp $L2/signed.apk.idsig $TMP/signed.idsig\n" \
                      "cp $L2/signed.apk.idsig $TMP/tampered.idsig\n"
        passed, failed = execute(kernel, l2, todo, args.timeout, head=head)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"e2e app wall time {time.monotonic() - t0:.0f} s")
    print(f"e2e app: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
