"""The sandbox's child program (:mod:`openrft.tasks.sandbox` starts it as ``python -I -B <this file>``).

It runs in the program's fresh working directory, reads ``payload.json`` there (the code, the entry function and
the limits), applies the sandbox layers, runs the program and writes one JSON result to a private copy of
stdout. It imports nothing from openrft (an isolated interpreter does not see the package) and only the standard
library: every layer is a function here, so a test can run the child with one of them switched off.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import resource
import signal
import sys
import traceback


def landlock(root: str) -> bool:
    if sys.platform != "linux":
        return False

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # landlock_create_ruleset / add_rule / restrict_self share numbers on every architecture.
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    fs = (1 << 1) | (1 << 4) | (1 << 5) | sum(1 << i for i in range(6, 13))  # write, remove, make_*
    fs |= (1 << 13) if abi >= 2 else 0  # refer
    fs |= (1 << 14) if abi >= 3 else 0  # truncate
    attr = (ctypes.c_uint64 * 3)(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # tcp bind+connect; scopes
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    try:
        dirfd = os.open(root, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = PathBeneath(fs, dirfd)
            if libc.syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)):
                return False
        finally:
            os.close(dirfd)
        if libc.prctl(38, 1, 0, 0, 0):  # PR_SET_NO_NEW_PRIVS
            return False
        return libc.syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def drop_caps() -> bool:
    if sys.platform != "linux":
        return os.geteuid() != 0

    if os.geteuid() != 0:
        return True

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    data = (Data * 2)()
    return libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0  # _LINUX_CAPABILITY_VERSION_3


def seccomp() -> bool:
    if sys.platform != "linux":
        return False

    tables = {
        "x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "socket": 41,
                                "socketpair": 53, "ptrace": 101, "process_vm_readv": 310,
                                "process_vm_writev": 311, "io_uring_setup": 425, "clone3": 435,
                                "clone": 56, "kill": 62, "tkill": 200, "tgkill": 234}),
        "aarch64": (0xC00000B7, {"execve": 221, "execveat": 281, "socket": 198, "socketpair": 199,
                                 "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                                 "io_uring_setup": 425, "clone3": 435, "clone": 220, "kill": 129,
                                 "tkill": 130, "tgkill": 131}),
    }
    machine = os.uname().machine
    if machine not in tables:
        return False
    audit_arch, nr = tables[machine]
    pid = os.getpid()
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog: list[tuple] = [(LD, 4), (JEQ, audit_arch, None, "nosys"), (LD, 0)]
    if machine == "x86_64":
        prog.append((JGE, 0x40000000, "nosys", None))  # x32 syscalls
    for name in ("fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace",
                 "process_vm_readv", "process_vm_writev", "io_uring_setup"):
        if name in nr:
            prog.append((JEQ, nr[name], "eperm", None))
    prog += [
        (JEQ, nr["clone3"], "nosys", None),  # flags sit behind a pointer; libc falls back to clone
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

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(insns))()
    for i, ins in enumerate(insns):
        code, k = ins[0], ins[1]
        jt = jf = 0
        if len(ins) == 4:
            jt = 0 if ins[2] is None else labels[ins[2]] - i - 1
            jf = 0 if ins[3] is None else labels[ins[3]] - i - 1
        filters[i] = Filter(code, jt, jf, k)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0):  # PR_SET_NO_NEW_PRIVS
        return False
    fprog = Prog(len(insns), filters)
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def python_guards() -> bool:
    import socket

    import _socket

    def no_network(*args, **kwargs):
        raise PermissionError(13, "network access is disabled in the sandbox")

    def no_processes(*args, **kwargs):
        raise PermissionError(1, "starting or signalling processes is disabled in the sandbox")

    class BlockedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            no_network()

    socket.socket = BlockedSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                 "gethostbyaddr", "socketpair", "fromfd"):
        setattr(socket, name, no_network)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "socketpair"):
        if hasattr(_socket, name):
            setattr(_socket, name, no_network)
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                 "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
                 "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "kill", "killpg", "setsid"):
        if hasattr(os, name):
            setattr(os, name, no_processes)
    try:
        import _posixsubprocess

        _posixsubprocess.fork_exec = no_processes
    except ImportError:
        pass
    return True


def convert(value, cap: int):
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int->str conversion allows
            return f"<int with about {int(value.bit_length() * 0.30103)} digits>"
    if not isinstance(value, (str, bytes, bytearray, complex)):
        for convert in (lambda v: str(v.__index__()), lambda v: float(v)):
            try:
                return convert(value)
            except Exception:
                pass
    try:
        text = str(value)
    except Exception as e:
        text = f"<unprintable {type(value).__name__}: {type(e).__name__}>"
    return text[:cap]


class OutputTooLarge(BaseException):
    pass


class Capped(io.TextIOBase):
    """A text stream that keeps at most ``cap`` characters; past them, writing raises :class:`OutputTooLarge`."""

    def __init__(self, cap: int):
        self.cap = cap
        self.parts, self.size, self.overflow = [], 0, False

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.size += len(s)
        if self.overflow or self.size > self.cap:
            self.overflow = True
            raise OutputTooLarge(f"program output exceeded {self.cap} characters")
        self.parts.append(s)
        return len(s)

    def getvalue(self):
        return "".join(self.parts)


def backstops(p: dict) -> None:
    """SIGKILL when the parent dies, SIGALRM when the time is up (should the parent fail to kill us); exit at
    once if the parent is already gone."""
    try:
        if sys.platform == "linux":
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != p["ppid"]:
        os._exit(3)
    signal.alarm(int(p["timeout_s"]) + 3)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail with EFBIG instead


def private_stdout() -> int:
    """A private copy of fd 1 for the result; fd 1 itself goes to /dev/null."""
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return result_fd


def apply_layers(p: dict) -> dict[str, bool]:
    """Resource limits, then Landlock, dropped capabilities, seccomp and the Python guards; which ones held."""
    layers = {}
    mb, cpu = p["memory_mb"], int(p["timeout_s"]) + 1
    limits = [(resource.RLIMIT_AS, mb << 20, mb << 20), (resource.RLIMIT_CPU, cpu, cpu + 1),
              (resource.RLIMIT_FSIZE, p["max_file_bytes"], p["max_file_bytes"]), (resource.RLIMIT_CORE, 0, 0)]
    if os.geteuid() != 0:
        limits.append((resource.RLIMIT_NPROC, 1, 1))
    layers["rlimits"] = True
    for res, soft, hard in limits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            layers["rlimits"] = False
    for name, fn in (("landlock", lambda: landlock(os.getcwd())), ("drop_caps", drop_caps),
                     ("seccomp", seccomp), ("python_guards", python_guards)):
        try:
            layers[name] = bool(fn())
        except Exception:
            layers[name] = False
    return layers


def describe(e: BaseException) -> str:
    """``Type: message (program line N)``, at most 2,000 characters."""
    try:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    except Exception:
        text = type(e).__name__
    lines = [fr.lineno for fr in traceback.extract_tb(e.__traceback__) if fr.filename == "<program>"]
    if lines:
        text += f" (program line {lines[-1]})"
    return text[:2000]


def run(p: dict, res: dict) -> None:
    """Compile and run the program, call its entry function, and fill ``res`` (ok, value, error, message)."""
    cap, mb = p["max_output_bytes"], p["memory_mb"]
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        try:
            code = compile(p["code"], "<program>", "exec")
        except (SyntaxError, ValueError) as e:
            res.update(error="syntax", message=describe(e) if not isinstance(e, SyntaxError)
                       else f"{type(e).__name__}: {e.msg} (program line {e.lineno})")
        else:
            exec(code, ns)
            entry = p["entry"]
            if entry is None:
                res["ok"] = True
            elif not callable(ns.get(entry)):
                res.update(error="no_entry", message=f"the program defines no function {entry}()")
            else:
                value = ns[entry]()
                res.update(ok=True, value=convert(value, cap))
    except OutputTooLarge as e:
        res.update(ok=False, error="output_too_large", message=str(e))
    except MemoryError as e:
        ns.clear()
        gc.collect()
        res.update(ok=False, error="memory", message=describe(e) + f"; limit {mb} MB")
    except SystemExit as e:
        res.update(ok=False, error="exception", message=f"program called exit({e.code!r})"[:2000])
    except BaseException as e:
        res.update(ok=False, error="exception", message=describe(e))


def report(res: dict, result_fd: int) -> None:
    try:
        data = (json.dumps(res) + "\n").encode()
    except Exception as e:
        data = (json.dumps({"ok": False, "error": "exception", "message": f"unreportable result: {e}"}) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(result_fd, view):]


def main() -> None:
    with open("payload.json", encoding="utf-8") as f:
        p = json.load(f)
    os.unlink("payload.json")
    cap = p["max_output_bytes"]
    backstops(p)
    result_fd = private_stdout()
    out, err = Capped(cap), Capped(cap)
    sys.stdout, sys.stderr = out, err
    res = {"ok": False, "value": None, "error": None, "message": "", "layers": apply_layers(p)}
    run(p, res)
    if out.overflow or err.overflow:
        res.update(ok=False, value=None, error="output_too_large", message=f"program output exceeded {cap} characters")
    res["stdout"] = out.getvalue()
    if res["error"] == "exception" and err.parts:
        res["message"] = (res["message"] + "\nstderr: " + err.getvalue()[-1000:])[:4000]
    report(res, result_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
