"""Run INSIDE a workload (as ``python3 -c <this file> '<json targets>'``): try every escape.

Prints one JSON line ``{"escape-report": {...}}``. For each attempt the value is
``"blocked: <why>"`` or ``"ESCAPED: <what it got>"``. Targets are host paths and ports the
test knows about: the platform's keys and databases, another tenant's volume, the services'
ports. Standard library only: it runs on the platform's interpreter inside the sandbox.
"""

import ctypes
import errno
import json
import os
import socket
import sys

targets = json.loads(sys.argv[1])
report: dict = {}


def attempt(name, fn):
    try:
        got = fn()
    except OSError as exc:
        report[name] = f"blocked: {errno.errorcode.get(exc.errno, exc.errno)} {exc.strerror}"
        return
    report[name] = f"ESCAPED: {got!r}"[:300]


def read(path):
    with open(path, "rb") as f:
        return f.read(64)


for path in targets.get("secret_files", []):
    attempt(f"read {path}", lambda path=path: read(path))
for path in targets.get("listable_dirs", []):
    attempt(f"list {path}", lambda path=path: os.listdir(path))
for path in targets.get("write_paths", []):

    def write(path=path):
        with open(path, "w") as f:
            f.write("tenant was here")
        return path

    attempt(f"write {path}", write)
for host, port in targets.get("tcp", []):

    def connect(host=host, port=port):
        return socket.create_connection((host, port), timeout=2).getpeername()

    attempt(f"connect {host}:{port}", connect)
# Abstract unix socket names (no leading NUL here): they belong to a network namespace.
own = targets.get("unix_own")
if own:  # a positive control: one bound in this namespace answers
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0" + own)
    listener.listen(1)
for name in targets.get("unix", []) + ([own] if own else []):

    def connect_unix(name=name):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(2)
        sock.connect("\0" + name)
        return name

    attempt(f"connect @{name}", connect_unix)

libc = ctypes.CDLL(None, use_errno=True)


def syscall(result):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "succeeded"


attempt("mount tmpfs", lambda: syscall(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
attempt("remount / rw", lambda: syscall(libc.mount(None, b"/", None, 32 | 4096, None)))
attempt("unshare user namespace", lambda: syscall(libc.unshare(0x10000000)))
attempt("unshare network namespace", lambda: syscall(libc.unshare(0x40000000)))
attempt("chroot", lambda: syscall(libc.chroot(b"/tmp")))
attempt("setuid 0", lambda: syscall(libc.setuid(0)))


def status_field(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return line.split()[1:]
    return []


report["uid"] = os.getuid()
report["euid"] = os.geteuid()
report["CapEff"] = status_field("CapEff")[0]
report["CapPrm"] = status_field("CapPrm")[0]
report["CapBnd"] = status_field("CapBnd")[0]
report["NoNewPrivs"] = status_field("NoNewPrivs")[0]
report["Seccomp"] = status_field("Seccomp")[0]
report["pids visible"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())[:50]
print(json.dumps({"escape-report": report}), flush=True)
