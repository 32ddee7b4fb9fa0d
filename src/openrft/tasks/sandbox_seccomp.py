"""The seccomp filter of the program sandbox (``sandbox_child.py`` imports it; standard library only).

The filter refuses, with ``EPERM``: new processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``) and
programs (``execve``), sockets, ``io_uring``, ``ptrace`` and cross-process memory access, ``open_by_handle_at``,
signals to other processes, and every change of file metadata (mode, owner, timestamps, extended attributes),
which Landlock cannot confine to the working directory. ``clone3`` fails with ``ENOSYS`` (its flags sit behind a
pointer), so libc falls back to ``clone``. x86-64 and arm64 only.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: refused with EPERM wherever the architecture has them
BLOCKED = (
    "fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace", "process_vm_readv", "process_vm_writev",
    "io_uring_setup", "open_by_handle_at",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
)
#: audit architecture and syscall numbers; arm64 lacks the legacy path calls (chmod, chown, utime, fork, ...)
TABLES = {
    "x86_64": (0xC000003E, {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "socket": 41, "socketpair": 53, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "io_uring_setup": 425, "open_by_handle_at": 304,
        "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94,
        "fchownat": 260, "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261, "setxattr": 188,
        "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199,
        "setxattrat": 463, "removexattrat": 466,
        "clone3": 435, "clone": 56, "kill": 62, "tkill": 200, "tgkill": 234,
    }),
    "aarch64": (0xC00000B7, {
        "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "io_uring_setup": 425, "open_by_handle_at": 265,
        "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchown": 55, "fchownat": 54, "utimensat": 88,
        "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16,
        "setxattrat": 463, "removexattrat": 466,
        "clone3": 435, "clone": 220, "kill": 129, "tkill": 130, "tgkill": 131,
    }),
}


def program(machine: str, pid: int) -> list[tuple[int, int, int, int]]:
    """The classic-BPF filter for ``machine`` as ``(code, jt, jf, k)`` instructions; ``pid`` may signal itself."""
    audit_arch, nr = TABLES[machine]
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog: list = [(LD, 4), (JEQ, audit_arch, None, "nosys"), (LD, 0)]
    if machine == "x86_64":
        prog.append((JGE, 0x40000000, "nosys", None))  # x32 syscalls
    prog += [(JEQ, nr[name], "eperm", None) for name in BLOCKED if name in nr]
    prog += [
        (JEQ, nr["clone3"], "nosys", None),
        (JEQ, nr["clone"], "clone", None),
        (JEQ, nr["kill"], "kill", None),
        (JEQ, nr["tkill"], "self", None),
        (JEQ, nr["tgkill"], "self", None),
        (RET, ALLOW),
        "clone", (LD, 16), (JSET, 0x00010000, "allow", "eperm"),  # threads only (CLONE_THREAD)
        "kill", (LD, 16), (JEQ, 0, "allow", None), (JEQ, (-pid) & 0xFFFFFFFF, "allow", None),
        "self", (JEQ, pid, "allow", "eperm"),
        "allow", (RET, ALLOW),
        "eperm", (RET, EPERM),
        "nosys", (RET, ENOSYS),
    ]
    labels, insns = {}, []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = []
    for i, ins in enumerate(insns):
        jt = jf = 0
        if len(ins) == 4:
            jt = 0 if ins[2] is None else labels[ins[2]] - i - 1
            jf = 0 if ins[3] is None else labels[ins[3]] - i - 1
        out.append((ins[0], jt, jf, ins[1]))
    return out


def seccomp() -> bool:
    """Install the filter on this process (and its future threads); whether it held."""
    machine = os.uname().machine
    if sys.platform != "linux" or machine not in TABLES:
        return False

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    insns = program(machine, os.getpid())
    filters = (Filter * len(insns))(*(Filter(*ins) for ins in insns))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0):  # PR_SET_NO_NEW_PRIVS
        return False
    fprog = Prog(len(insns), filters)
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
