"""Run untrusted generated Python programs in separate, time- and memory-limited processes.

Model-written code is never executed in the calling process. Each program runs in its
own ``python -I -B`` child, started in a new session (so its whole process group can be
killed), with an almost empty environment and a fresh temporary directory as its working
directory (removed afterwards). Before the program runs, the child applies, in order:

* **resource limits**: address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), file
  size (``RLIMIT_FSIZE``; writing past it fails with ``EFBIG``), no core dumps, and
  ``RLIMIT_NPROC`` when not running as root (root ignores it);
* **Landlock** (Linux >= 5.13, when enabled): file writes only beneath the working
  directory; with newer ABIs also no TCP bind/connect and no signals to processes
  outside the sandbox;
* **capabilities dropped** (when run as root), so raised hard limits, mounts, reboots and
  ptrace of other processes are refused;
* **seccomp** (x86-64 and arm64): no new processes (``fork``/``vfork``/``clone`` without
  ``CLONE_THREAD``), no ``execve``, no sockets, no ``io_uring``, no ``ptrace``, no signals
  to other processes;
* **Python-level guards**: ``socket.socket``, ``create_connection``, ``getaddrinfo`` and
  friends raise, and ``os.fork``/``os.system``/``os.exec*``/``subprocess`` spawning raise.

Every layer is best effort: on a kernel or platform without one, the others still apply
and the parent still enforces the wall-clock limit and kills the process group.
:func:`sandbox_layers` reports which layers a child could apply on this machine. This is
a guard against accidents and sloppy generated code (infinite loops, memory bombs,
stray file writes, fork bombs), not a container against a determined attacker; run RL on
machines you are prepared to lose, or inside a container.

The result of the entry function travels back as one JSON object on a private pipe.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["timeout", "memory", "exception", "no_entry", "syntax", "output_too_large"]
ERROR_KINDS: tuple[str, ...] = ("timeout", "memory", "exception", "no_entry", "syntax", "output_too_large")

_STDERR_KEEP = 4096
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed program.

    ``value`` is what the entry function returned: a ``float`` for floats, otherwise a
    string (``str(int)`` for integers, so big integers stay exact; ``str(x)`` for strings,
    fractions, decimals and other objects; ``float(x)`` for other number-like objects such
    as numpy or sympy numbers). ``error`` is ``None`` when ``ok``; ``stdout`` is what the
    program printed (at most ``max_output_bytes`` characters).
    """

    ok: bool
    value: str | float | None = None
    error: ErrorKind | None = None
    message: str = ""
    elapsed: float = 0.0
    stdout: str = ""


@dataclass(frozen=True)
class _Spec:
    entry: str | None
    token: str
    timeout_s: float
    memory_mb: int
    max_output_bytes: int
    max_file_bytes: int


def run_programs(
    codes: Sequence[str],
    entry: str | None = "solution",
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_workers: int | None = None,
    *,
    max_output_bytes: int = 65536,
    max_file_bytes: int = 1 << 20,
) -> list[ExecResult]:
    """Run each program in its own sandboxed child process, several at a time.

    Each program is executed as a module (``__name__ == "__main__"``), then ``entry()`` is
    called (skip the call with ``entry=None``). Results come back in input order. A
    program that runs past ``timeout_s`` (wall clock) is killed with its process group and
    reported as ``"timeout"``; one that exhausts ``memory_mb`` of address space as
    ``"memory"``; one that prints more than ``max_output_bytes`` characters as
    ``"output_too_large"``. Files it writes may not exceed ``max_file_bytes``. At most
    ``max_workers`` (default ``min(4, cpu count)``) children run at once.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 32:
        raise ValueError(f"memory_mb must be at least 32 (the interpreter needs it), got {memory_mb}")
    if max_output_bytes < 1 or max_file_bytes < 0:
        raise ValueError("max_output_bytes must be >= 1 and max_file_bytes >= 0")
    if os.name != "posix":
        raise RuntimeError("the program sandbox needs a POSIX system (Linux for the full set of limits)")
    codes = list(codes)
    if not codes:
        return []
    for i, code in enumerate(codes):
        if not isinstance(code, str):
            raise TypeError(f"codes[{i}] is {type(code).__name__}, expected str")
    spec = _Spec(entry, _token(), float(timeout_s), int(memory_mb), int(max_output_bytes), int(max_file_bytes))
    workers = max(1, min(max_workers or min(4, os.cpu_count() or 1), len(codes)))
    try:
        if workers == 1:
            return [_run_one(code, spec)[0] for code in codes]
        with ThreadPoolExecutor(workers, thread_name_prefix="openrft-sandbox") as pool:
            return [r for r, _ in pool.map(lambda c: _run_one(c, spec), codes)]
    finally:
        _sweep(spec.token)


def run_program(code: str, entry: str | None = "solution", **kwargs: Any) -> ExecResult:
    """:func:`run_programs` for one program."""
    return run_programs([code], entry, **kwargs)[0]


def sandbox_layers() -> dict[str, bool]:
    """Which protection layers a sandboxed child can apply on this machine.

    Keys: ``rlimits``, ``landlock``, ``drop_caps``, ``seccomp``, ``python_guards``.
    """
    result, raw = _run_one("", _Spec(None, _token(), 10.0, 256, 1024, 0))
    if not result.ok:
        raise RuntimeError(f"the sandbox could not run an empty program: {result.error}: {result.message}")
    return {k: bool(v) for k, v in raw.get("layers", {}).items()}


# ---- parent side -------------------------------------------------------------------------


def _token() -> str:
    """Marker put in the environment of one batch's children (``OPENRFT_SANDBOX``), for :func:`_sweep`."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _sweep(token: str) -> None:
    """Kill any process still carrying ``token`` in its environment.

    Normally there is none: seccomp stops children from starting processes, and the
    process group is killed after each run. This catches a process that escaped the
    group (``setsid`` through ``ctypes``) on a system without seccomp. Linux only.
    """
    marker = f"OPENRFT_SANDBOX={token}".encode() + b"\0"
    for _ in range(10):
        found = 0
        try:
            pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker not in f.read():
                        continue
                os.kill(pid, signal.SIGKILL)
                found += 1
            except OSError:
                continue
        if not found:
            return
        time.sleep(0.01)


def _run_one(code: str, spec: _Spec) -> tuple[ExecResult, dict[str, Any]]:
    workdir = tempfile.mkdtemp(prefix="openrft-sandbox-")
    try:
        payload = {
            "code": code,
            "entry": spec.entry,
            "timeout_s": spec.timeout_s,
            "memory_mb": spec.memory_mb,
            "max_output_bytes": spec.max_output_bytes,
            "max_file_bytes": spec.max_file_bytes,
            "ppid": os.getpid(),
        }
        with open(os.path.join(workdir, "payload.json"), "w", encoding="utf-8") as f:
            json.dump(payload, f)
        env = dict(_ENV, HOME=workdir, TMPDIR=workdir, OPENRFT_SANDBOX=spec.token)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _child_script()],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            return ExecResult(False, None, "exception", f"could not start the sandbox process: {e}"), {}
        # The result is a JSON object holding stdout, value and message, each capped in the child.
        hard_cap = 4 * spec.max_output_bytes + (1 << 16)
        try:
            state, out, err = _collect(proc, start + spec.timeout_s, hard_cap)
        finally:
            _kill_group(proc)
        elapsed = time.monotonic() - start
        return _classify(state, proc.returncode, out, err, elapsed, spec)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _leader_exited(proc: subprocess.Popen) -> bool:
    """Whether the child exited, without reaping it (so its process group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
    except AttributeError:  # no waitid on this platform
        return proc.poll() is not None


def _collect(proc: subprocess.Popen, deadline: float, hard_cap: int) -> tuple[str, bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)

    def read(fd: int) -> bool:  # False at end of file; at most 4 MiB per call
        for _ in range(64):
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            bufs[fd] += chunk
            if fd == err_fd and len(bufs[fd]) > 2 * _STDERR_KEEP:
                del bufs[fd][:-_STDERR_KEEP]
            if fd == out_fd and len(bufs[fd]) > hard_cap:
                return True
        return True

    state = "exited"
    try:
        while True:
            if len(bufs[out_fd]) > hard_cap:
                state = "too_large"
                break
            if _leader_exited(proc):
                for fd in list(sel.get_map()):
                    read(fd)
                state = "too_large" if len(bufs[out_fd]) > hard_cap else "exited"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = "timeout"
                break
            if not sel.get_map():  # both pipes closed; the child is exiting
                time.sleep(min(remaining, 0.005))
                continue
            for key, _ in sel.select(min(remaining, 0.05)):
                if not read(key.fd):
                    sel.unregister(key.fd)
    finally:
        sel.close()
    return state, bytes(bufs[out_fd]), bytes(bufs[err_fd])


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (it is its own session leader), then reap it."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _classify(
    state: str, returncode: int, out: bytes, err: bytes, elapsed: float, spec: _Spec
) -> tuple[ExecResult, dict[str, Any]]:
    if state == "timeout":
        return ExecResult(False, None, "timeout", f"no result within {spec.timeout_s:g} s (wall clock)", elapsed), {}
    if state == "too_large":
        msg = f"program output exceeded {spec.max_output_bytes} characters"
        return ExecResult(False, None, "output_too_large", msg, elapsed), {}
    raw: dict[str, Any] = {}
    text = out.decode("utf-8", "replace").strip()
    if text:
        try:
            raw = json.loads(text.splitlines()[-1])
        except ValueError:
            raw = {}
    if isinstance(raw, dict) and "ok" in raw:
        error = raw.get("error")
        value = raw.get("value")
        if error is not None and error not in ERROR_KINDS:
            error = "exception"
        if not isinstance(value, (str, float, int)) or isinstance(value, bool):
            value = None
        if isinstance(value, int):
            value = str(value)
        result = ExecResult(
            ok=bool(raw["ok"]) and error is None,
            value=value,
            error=error,
            message=str(raw.get("message", "")),
            elapsed=elapsed,
            stdout=str(raw.get("stdout", "")),
        )
        return result, raw
    # No result object: the child died before it could report.
    tail = err.decode("utf-8", "replace").strip()[-1000:]
    if returncode in (-signal.SIGXCPU, -signal.SIGALRM):
        return ExecResult(False, None, "timeout", "CPU time limit exceeded", elapsed), {}
    if returncode == -signal.SIGKILL or "MemoryError" in tail:
        return ExecResult(False, None, "memory", f"killed (likely out of memory). {tail}".strip(), elapsed), {}
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return ExecResult(False, None, "exception", f"program crashed with signal {name}. {tail}".strip(), elapsed), {}
    msg = f"program exited with status {returncode} without a result. {tail}".strip()
    return ExecResult(False, None, "exception", msg, elapsed), {}


# ---- child side ----------------------------------------------------------------------------
# The functions below run only in the sandbox process: their source is sent to a fresh
# interpreter (``python -I -B -c``), so they import what they need and use nothing else
# from this module.


def _child_landlock(root: str) -> bool:
    import ctypes
    import os
    import sys

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


def _child_drop_caps() -> bool:
    import ctypes
    import os
    import sys

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


def _child_seccomp() -> bool:
    import ctypes
    import os
    import sys

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


def _child_python_guards() -> bool:
    import os
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


def _child_convert(value, cap: int):
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


def _child_main() -> None:
    import gc
    import io
    import json
    import os
    import resource
    import signal
    import sys
    import traceback

    with open("payload.json", encoding="utf-8") as f:
        p = json.load(f)
    os.unlink("payload.json")
    cap, timeout = p["max_output_bytes"], p["timeout_s"]
    dumps, write, exit_now = json.dumps, os.write, os._exit

    # Backstops should the parent die: SIGKILL when it does, SIGALRM when the time is up.
    try:
        import ctypes

        if sys.platform == "linux":
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != p["ppid"]:
        exit_now(3)
    signal.alarm(int(timeout) + 3)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail with EFBIG instead

    # Our result goes to a private copy of stdout; fd 1 itself goes to /dev/null.
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

    class OutputTooLarge(BaseException):
        pass

    class Capped(io.TextIOBase):
        def __init__(self):
            self.parts, self.size, self.overflow = [], 0, False

        def writable(self):
            return True

        def write(self, s):
            if not isinstance(s, str):
                raise TypeError(f"write() argument must be str, not {type(s).__name__}")
            self.size += len(s)
            if self.overflow or self.size > cap:
                self.overflow = True
                raise OutputTooLarge(f"program output exceeded {cap} characters")
            self.parts.append(s)
            return len(s)

        def getvalue(self):
            return "".join(self.parts)

    out, err = Capped(), Capped()
    sys.stdout, sys.stderr = out, err

    layers = {}
    mb, cpu = p["memory_mb"], int(timeout) + 1
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
    for name, fn in (("landlock", lambda: _child_landlock(os.getcwd())), ("drop_caps", _child_drop_caps),
                     ("seccomp", _child_seccomp), ("python_guards", _child_python_guards)):
        try:
            layers[name] = bool(fn())
        except Exception:
            layers[name] = False

    res = {"ok": False, "value": None, "error": None, "message": "", "layers": layers}
    ns = {"__name__": "__main__", "__builtins__": __builtins__}

    def describe(e):
        try:
            text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        except Exception:
            text = type(e).__name__
        lines = [fr.lineno for fr in traceback.extract_tb(e.__traceback__) if fr.filename == "<program>"]
        if lines:
            text += f" (program line {lines[-1]})"
        return text[:2000]

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
                res.update(ok=True, value=_child_convert(value, cap))
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
    if out.overflow or err.overflow:
        res.update(ok=False, value=None, error="output_too_large", message=f"program output exceeded {cap} characters")
    res["stdout"] = out.getvalue()
    if res["error"] == "exception" and err.parts:
        res["message"] = (res["message"] + "\nstderr: " + err.getvalue()[-1000:])[:4000]
    try:
        data = (dumps(res) + "\n").encode()
    except Exception as e:
        data = (dumps({"ok": False, "error": "exception", "message": f"unreportable result: {e}"}) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[write(result_fd, view):]
    exit_now(0)


_CHILD_FUNCTIONS = (
    _child_landlock, _child_drop_caps, _child_seccomp, _child_python_guards, _child_convert, _child_main,
)


@functools.cache
def _child_script() -> str:
    parts = ["from __future__ import annotations"]
    parts += [inspect.getsource(fn) for fn in _CHILD_FUNCTIONS]
    parts.append("_child_main()\n")
    return "\n\n".join(parts)
