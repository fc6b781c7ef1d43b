#!/usr/bin/env python3
"""bench/control: the control socket's request latency and event rate.

On a tiny guest VM (`micro-vmm run` with the probe guest and `exit=halt`: the vCPU sits in
HLT), static release build, 1 vCPU, 64 MiB:
  * round trip of one `status` request on one connection, sequential, --requests times
    (default 2000): p50 / p99 / max;
  * events/s: --cycles pause/resume cycles (default 500) on one connection while a second
    connection is subscribed; the rate is events received by the subscriber over the time
    from the first request to the last event (each cycle is two events, `paused` and
    `resumed`, and a pause waits until the vCPU has left KVM_RUN).

  * the host manager: --vms N (default 20) app VMs (a tiny APK, the probe guest as the OS,
    64 MiB each) created with `micro-vmm vm create`, started with `vm run --detach` (which
    returns once the VM runs), stopped and deleted, one after another: VMs per second for
    each step.

  bench/control.py [--requests N] [--cycles N] [--vms N]

The numbers go into docs/performance.md.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(out):
    binary = subprocess.run([os.path.join(ROOT, "scripts/build-static")], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "resources/test-guests"),
                    f"OUT={out}"], check=True)
    return binary


def connect(path, timeout=20.0):
    t0 = time.monotonic()
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(0.01)


class Conn:
    def __init__(self, path):
        self.sock = connect(path)
        self.file = self.sock.makefile("rb")

    def ask(self, id_, method):
        self.sock.sendall(json.dumps({"id": id_, "method": method}).encode() + b"\n")
        resp = json.loads(self.file.readline())
        if "result" not in resp:
            raise RuntimeError(f"{method}: {resp}")
        return resp

    def close(self):
        self.file.close()
        self.sock.close()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--vms", type=int, default=20)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-control-") as work:
        guests = os.path.join(work, "guests")
        binary = build(guests)
        sock = os.path.join(work, "c.sock")
        vm = subprocess.Popen([binary, "run", "--kernel", os.path.join(guests, "probe-pvh.elf"),
                               "--cmdline", "exit=halt", "--mem", "64", "--console-in", "none",
                               "--serial", "none", "--socket", sock],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            c = Conn(sock)
            for i in range(50):  # warm-up
                c.ask(i, "status")
            lat = []
            for i in range(args.requests):
                t = time.perf_counter()
                c.ask(i, "status")
                lat.append((time.perf_counter() - t) * 1e6)

            sub = Conn(sock)
            sub.ask(0, "subscribe")
            want = 2 * args.cycles
            got = []
            done = threading.Event()

            def reader():
                for line in sub.file:
                    ev = json.loads(line)["event"]
                    if ev["type"] in ("paused", "resumed"):
                        got.append(time.perf_counter())
                        if len(got) == want:
                            done.set()
                            return

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            t0 = time.perf_counter()
            pause_lat = []
            for i in range(args.cycles):
                t1 = time.perf_counter()
                c.ask(i, "pause")
                pause_lat.append((time.perf_counter() - t1) * 1e6)
                c.ask(i, "resume")
            if not done.wait(30):
                sys.exit(f"only {len(got)} of {want} events arrived")
            elapsed = got[-1] - t0

            c.ask(0, "kill")
            vm.wait(timeout=30)
        finally:
            if vm.poll() is None:
                vm.kill()
                vm.wait()
        rates = manager_rates(binary, guests, work, args.vms)

    print(f"status round trip, {args.requests} sequential requests on one connection:")
    print(f"  p50 {pct(lat, 50):.1f} us   p99 {pct(lat, 99):.1f} us   max {max(lat):.1f} us   "
          f"mean {statistics.mean(lat):.1f} us")
    print(f"pause/resume, {args.cycles} cycles with one subscriber:")
    print(f"  {want / elapsed:,.0f} events/s ({args.cycles / elapsed:,.0f} cycles/s); "
          f"pause round trip p50 {pct(pause_lat, 50):.1f} us, p99 {pct(pause_lat, 99):.1f} us")
    print(f"host manager, {args.vms} app VMs (probe guest as the OS), one after another:")
    for step, (secs, per_vm) in rates.items():
        print(f"  {step:<14} {args.vms / secs:7.1f} VMs/s   median {statistics.median(per_vm):.1f} ms")


def manager_rates(binary, guests, work, n):
    """Seconds for n sequential `vm create`, `vm run --detach`, `vm stop`, `vm delete`, and
    the per-VM times in ms."""
    import zipfile
    home = os.path.join(work, "home")
    env = dict(os.environ, MICRO_VMM_HOME=home)
    apk = os.path.join(work, "bench.apk")
    with zipfile.ZipFile(apk, "w") as z:
        z.writestr("assets/vm_config.json",
                   '{"task": {"type": "executable", "command": "/mnt/apk/bin/run"}}')
    os_config = os.path.join(work, "os.json")
    with open(os_config, "w") as f:
        json.dump({"kernel": os.path.join(guests, "probe-pvh.elf"), "params": "exit=halt",
                   "memory_mib": 64, "platform_version": "~1.0"}, f)
    config = os.path.join(work, "vm.json")
    with open(config, "w") as f:
        json.dump({"apk": apk, "config_path": "assets/vm_config.json", "memory_mib": 64,
                   "os_config": os_config}, f)
    steps = {
        "create": lambda name: [binary, "vm", "create", name, "--config", config],
        "run --detach": lambda name: [binary, "vm", "run", name, "--detach"],
        "stop": lambda name: [binary, "vm", "stop", name],
        "delete": lambda name: [binary, "vm", "delete", name],
    }
    out = {}
    for step, argv in steps.items():
        per_vm = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            subprocess.run(argv(f"vm{i}"), check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
            per_vm.append((time.perf_counter() - t) * 1e3)
        out[step] = (time.perf_counter() - t0, per_vm)
    return out


if __name__ == "__main__":
    main()
