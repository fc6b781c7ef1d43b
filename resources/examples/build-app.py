#!/usr/bin/env python3
"""Builds an app APK (a zip) from a directory of files in this repo, for `micro-vmm --app`.

    resources/examples/build-app.py OUT.apk [--src DIR] [--exit-code N] [--config FILE]
                                            [--payload FILE] [--add NAME=FILE]... [--sign]

--src defaults to resources/examples/hello. --exit-code writes assets/exit_code (what the
sample payload exits with). --config / --payload replace assets/vm_config.json /
bin/hello. --sign signs it with Debian's apksigner (v2, v3 and v4: OUT.apk.idsig), using a
throwaway key made with openssl. Unix modes are kept (bin/* is executable). Python stdlib only.
"""
import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def add(z, name, data, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)


def sign(apk):
    apksigner = shutil.which("apksigner")
    if not apksigner:
        sys.exit("build-app: --sign needs apksigner (apt-get install apksigner)")
    with tempfile.TemporaryDirectory(prefix="mvmm-sign-") as d:
        key, cert = os.path.join(d, "key.pk8"), os.path.join(d, "cert.pem")
        pem = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "3650", "-subj", "/CN=micro-vmm example", "-keyout", pem, "-out", cert],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-inform", "PEM",
                        "-outform", "DER", "-in", pem, "-out", key], check=True)
        subprocess.run([apksigner, "sign", "--key", key, "--cert", cert,
                        "--min-sdk-version", "33", "--v4-signing-enabled", "true", apk],
                       check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--src", default=os.path.join(HERE, "hello"))
    ap.add_argument("--exit-code", type=int)
    ap.add_argument("--config")
    ap.add_argument("--payload")
    ap.add_argument("--add", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--sign", action="store_true")
    a = ap.parse_args()
    files = {}
    for root, _, names in os.walk(a.src):
        for n in sorted(names):
            path = os.path.join(root, n)
            files[os.path.relpath(path, a.src)] = path
    if a.config:
        files["assets/vm_config.json"] = a.config
    if a.payload:
        files["bin/hello"] = a.payload
    for spec in a.add:
        name, _, path = spec.partition("=")
        files[name] = path
    tmp = a.out + ".tmp"
    with zipfile.ZipFile(tmp, "w") as z:
        # AndroidManifest.xml first, as aapt writes it.
        for name in sorted(files, key=lambda n: (n != "AndroidManifest.xml", n)):
            data = open(files[name], "rb").read()
            mode = 0o755 if name.startswith("bin/") else 0o644
            add(z, name, data, mode)
        if a.exit_code is not None:
            add(z, "assets/exit_code", f"{a.exit_code}\n".encode(), 0o644)
    os.replace(tmp, a.out)
    if a.sign:
        sign(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
