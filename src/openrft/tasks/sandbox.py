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
from pathlib import Path
from typing import Any, Literal

ErrorKind = Literal["timeout", "memory", "exception", "no_entry", "syntax", "output_too_large"]
ERROR_KINDS: tuple[str, ...] = ("timeout", "memory", "exception", "no_entry", "syntax", "output_too_large")

_STDERR_KEEP = 4096
#: the child program, run as a script by an isolated interpreter (see its docstring)
CHILD_SCRIPT = Path(__file__).with_name("sandbox_child.py")
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
                [sys.executable, "-I", "-B", str(CHILD_SCRIPT)],
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
