"""The seccomp filter every sandboxed workload runs under (classic BPF, built here).

A deny list, like Docker's default profile in spirit: the calls that administer the machine or
widen the kernel's attack surface (mounting, namespaces, modules, kexec, bpf, perf, keyrings,
userfaultfd, io_uring, clock and swap control) fail with EPERM. ``clone3`` fails with ENOSYS,
because its flags sit behind a pointer a filter cannot read; the C library then falls back to
``clone``, whose flags are checked: a new namespace of any kind is refused. Everything else is
allowed. A call from a foreign ABI (x32 on x86-64, or another architecture) kills the process,
since its syscall numbers mean something else.

bubblewrap loads the program with ``--seccomp FD`` right before it executes the workload.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0_LO = 0, 4, 16
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_ERRNO = 0x00050000
_X32_BIT = 0x40000000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
NAMESPACE_FLAGS |= 0x40000000

_COMMON_NEW = {  # the same numbers on both tables since the 5.x unification
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
}
#: (audit arch, denied syscalls, clone, clone3) per machine.
ARCHES: dict[str, tuple[int, dict[str, int], int, int]] = {
    "x86_64": (
        0xC000003E,
        {
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "swapon": 167,
            "swapoff": 168,
            "reboot": 169,
            "sethostname": 170,
            "setdomainname": 171,
            "iopl": 172,
            "ioperm": 173,
            "create_module": 174,
            "init_module": 175,
            "delete_module": 176,
            "quotactl": 179,
            "nfsservctl": 180,
            "acct": 163,
            "settimeofday": 164,
            "adjtimex": 159,
            "clock_settime": 227,
            "clock_adjtime": 305,
            "syslog": 103,
            "vhangup": 153,
            "uselib": 134,
            "_sysctl": 156,
            "lookup_dcookie": 212,
            "kexec_load": 246,
            "kexec_file_load": 320,
            "finit_module": 313,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "unshare": 272,
            "setns": 308,
            "name_to_handle_at": 303,
            "open_by_handle_at": 304,
            "perf_event_open": 298,
            "bpf": 321,
            "userfaultfd": 323,
            **_COMMON_NEW,
        },
        56,
        435,
    ),
    "aarch64": (
        0xC00000B7,
        {
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "swapon": 224,
            "swapoff": 225,
            "reboot": 142,
            "sethostname": 161,
            "setdomainname": 162,
            "init_module": 105,
            "delete_module": 106,
            "quotactl": 60,
            "nfsservctl": 42,
            "acct": 89,
            "settimeofday": 170,
            "adjtimex": 171,
            "clock_settime": 112,
            "clock_adjtime": 266,
            "syslog": 116,
            "vhangup": 58,
            "lookup_dcookie": 18,
            "kexec_load": 104,
            "kexec_file_load": 294,
            "finit_module": 273,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "unshare": 97,
            "setns": 268,
            "name_to_handle_at": 264,
            "open_by_handle_at": 265,
            "perf_event_open": 241,
            "bpf": 280,
            "userfaultfd": 282,
            **_COMMON_NEW,
        },
        220,
        435,
    ),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(machine: str | None = None) -> bytes:
    """The BPF program (an array of ``struct sock_filter``) for this machine's architecture."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise ValueError(f"no seccomp filter for architecture {machine!r}")
    audit_arch, denied, clone_nr, clone3_nr = ARCHES[machine]
    numbers = sorted(set(denied.values()))
    # Layout: header, one JEQ per denied number, the clone checks, then the return blocks.
    # Jumps are forward and relative, counted in instructions after the jumping one.
    body: list[tuple[str, int]] = [("deny", nr) for nr in numbers]
    prog: list[bytes] = [
        _insn(_LD_W_ABS, _ARCH),
        _insn(_JEQ, audit_arch, 1, 0),
        _insn(_RET, _KILL_PROCESS),
        _insn(_LD_W_ABS, _NR),
    ]
    if machine == "x86_64":
        prog.append(_insn(_JGE, _X32_BIT, 0, 1))
        prog.append(_insn(_RET, _KILL_PROCESS))
    # After the JEQs come: [clone3 -> ENOSYS] [clone -> flags check] [ALLOW] [EPERM] [ENOSYS]
    n = len(body)
    tail_start = len(prog) + n
    # tail layout, indices relative to tail_start:
    #   0: JEQ clone3 -> enosys        1: JEQ clone -> 3 else allow(5)
    #   2: (unused pad: RET ALLOW)     3: LD arg0 low word
    #   4: JSET ns flags -> eperm      5: RET ALLOW   6: RET EPERM   7: RET ENOSYS
    allow_at, eperm_at, enosys_at = tail_start + 5, tail_start + 6, tail_start + 7
    for i, (_, nr) in enumerate(body):
        here = len(prog)
        prog.append(_insn(_JEQ, nr, eperm_at - here - 1, 0))
        assert eperm_at - here - 1 < 256, "too many denied syscalls for 8-bit jumps"
        del i
    here = len(prog)  # tail 0
    prog.append(_insn(_JEQ, clone3_nr, enosys_at - here - 1, 0))
    here = len(prog)  # tail 1
    prog.append(_insn(_JEQ, clone_nr, 1, allow_at - here - 1))
    prog.append(_insn(_RET, _ALLOW))  # tail 2: never reached, keeps offsets readable
    prog.append(_insn(_LD_W_ABS, _ARG0_LO))  # tail 3
    here = len(prog)  # tail 4
    prog.append(_insn(_JSET, NAMESPACE_FLAGS, eperm_at - here - 1, 0))
    prog.append(_insn(_RET, _ALLOW))  # tail 5
    prog.append(_insn(_RET, _ERRNO | errno.EPERM))  # tail 6
    prog.append(_insn(_RET, _ERRNO | errno.ENOSYS))  # tail 7
    return b"".join(prog)
