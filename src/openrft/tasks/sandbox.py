"""Run untrusted generated Python programs in separate, time- and memory-limited processes.

Model-written code is never executed in the calling process. Each program gets a fresh temporary working directory
(removed afterwards) and a ``python -I -B`` child started in a new session (so its whole process group can be
killed) with an almost empty environment. The child (``sandbox_child.py``) forks before anything untrusted runs:
a **monitor**, which never runs untrusted code, and a **worker**, which applies these layers, in order, and then
runs the program:

* **privilege drop** (when the parent runs as root): the worker becomes ``nobody`` (65534 on Linux) with no
  supplementary groups; that uid owns the working directory. Where that uid cannot read the Python installation
  (e.g. one under ``/root``) it keeps ``CAP_DAC_READ_SEARCH`` alone, so it can import modules; it then reads what
  root reads (as a root sandbox always did) but writes, chmods and signals only as ``nobody``;
* **resource limits**: address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), file size (``RLIMIT_FSIZE``;
  writing past it fails with ``EFBIG``), no core dumps, and ``RLIMIT_NPROC`` of 1 (the ``nproc`` layer; root is
  exempt, hence the drop first), so no fork succeeds even without seccomp;
* **Landlock** (Linux >= 5.13, when enabled): file writes only beneath the working directory; with newer ABIs
  also no TCP bind/connect and no signals to processes outside the sandbox;
* **capabilities dropped** (when still root), so raised hard limits, mounts, reboots and ptrace are refused;
* **seccomp** (x86-64 and arm64, ``sandbox_seccomp.py``): no new processes (``fork``/``vfork``/``clone`` without
  ``CLONE_THREAD``), no ``execve``, no sockets, no ``io_uring``, no ``ptrace``, no ``open_by_handle_at``, no
  signals to other processes, and no change of file mode, owner, timestamps or extended attributes anywhere
  (Landlock cannot confine those to the working directory, and a maths program never needs them);
* **Python-level guards**: ``socket.socket``, ``create_connection``, ``getaddrinfo`` and friends raise, and
  ``os.fork``/``os.system``/``os.exec*``/``subprocess`` spawning raise.

Every layer is best effort: on a kernel or platform without one, the others still apply and the parent still
enforces the wall-clock limit, kills the process group and sweeps stray processes. :func:`sandbox_layers` reports
which layers a child could apply on this machine, and the first batch logs them (INFO). This is a guard against
accidents and sloppy generated code (infinite loops, memory bombs, stray file writes, fork bombs), not a
container against a determined attacker; run RL on machines you are prepared to lose, or inside a container.

**Result channel.** The worker points its stdin and stdout at ``/dev/null``; it reports to the monitor over a pipe,
in lines that start with a random nonce (output the program writes to its descriptors lacks it and is ignored).
The monitor is not dumpable, so the worker can reach neither its descriptors nor its memory through ``/proc``. It
reads a per-run key from stdin after the fork (so the worker never held it), waits for the worker, checks the
result's fields and the output cap, and writes the parent one line: the key, then the layers report, the result
and the worker's exit status as JSON. The parent ignores anything without the key. A program can therefore at most
claim a value it could have returned (if it digs the nonce out of its own memory): the layers report is sent before
it starts, and nothing reaches the parent before the worker exits, so the wall-clock limit still holds.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
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

logger = logging.getLogger(__name__)

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
            pairs = [_run_one(code, spec) for code in codes]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="openrft-sandbox") as pool:
                pairs = list(pool.map(lambda c: _run_one(c, spec), codes))
    finally:
        _sweep(spec.token)
    _log_layers(next((raw["layers"] for _, raw in pairs if raw.get("layers")), None))
    return [r for r, _ in pairs]


def run_program(code: str, entry: str | None = "solution", **kwargs: Any) -> ExecResult:
    """:func:`run_programs` for one program."""
    return run_programs([code], entry, **kwargs)[0]


def sandbox_layers() -> dict[str, bool]:
    """Which protection layers a sandboxed child can apply on this machine.

    Keys, in the order the child applies them: ``drop_privileges``, ``rlimits``, ``nproc``, ``landlock``,
    ``drop_caps``, ``seccomp``, ``python_guards``.
    """
    result, raw = _run_one("", _Spec(None, _token(), 10.0, 256, 1024, 0))
    if not result.ok:
        raise RuntimeError(f"the sandbox could not run an empty program: {result.error}: {result.message}")
    return {k: bool(v) for k, v in raw.get("layers", {}).items()}


# ---- parent side -------------------------------------------------------------------------

_layers_logged = False


def _log_layers(layers: Any) -> None:
    """Log, once per process, which protection layers the sandbox's children applied."""
    global _layers_logged
    if _layers_logged or not isinstance(layers, dict):
        return
    _layers_logged = True
    on = ", ".join(k for k, v in layers.items() if v) or "none"
    off = ", ".join(k for k, v in layers.items() if not v) or "none"
    logger.info("program sandbox layers active: %s; unavailable: %s", on, off)


@functools.cache
def _unprivileged_ids() -> tuple[int, int]:
    """The uid and gid a root parent's programs run as: ``nobody``'s, else 65534."""
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return 65534, 65534


def _give_away(workdir: str) -> list[int] | None:
    """Under root, hand ``workdir`` to the unprivileged ids the child will switch to; those ids, or ``None``."""
    if os.geteuid() != 0:
        return None
    uid, gid = _unprivileged_ids()
    try:
        os.chown(workdir, uid, gid)
    except OSError:  # e.g. a user namespace that maps no such id: the child stays root, without capabilities
        return None
    return [uid, gid]


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
            "run_as": _give_away(workdir),
        }
        with open(os.path.join(workdir, "payload.json"), "w", encoding="utf-8") as f:
            json.dump(payload, f)
        env = dict(_ENV, HOME=workdir, TMPDIR=workdir, OPENRFT_SANDBOX=spec.token)
        key = secrets.token_hex(16)  # authenticates the monitor's line; the program never holds it
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(CHILD_SCRIPT)],
                cwd=workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            return ExecResult(False, None, "exception", f"could not start the sandbox process: {e}"), {}
        try:
            assert proc.stdin is not None
            os.write(proc.stdin.fileno(), key.encode())
            proc.stdin.close()
        except OSError:
            pass  # the child is already gone; classified below
        # The monitor's line holds stdout, value and message, each capped in the child.
        hard_cap = 32 * spec.max_output_bytes + (1 << 16)
        try:
            state, out, err = _collect(proc, start + spec.timeout_s, hard_cap, key.encode())
        finally:
            _kill_group(proc)
        elapsed = time.monotonic() - start
        return _classify(state, proc.returncode, out, err, elapsed, spec, key)
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


def _collect(proc: subprocess.Popen, deadline: float, hard_cap: int, key: bytes) -> tuple[str, bytes, bytes]:
    """Read the child's stdout and stderr until it exits, sends its whole line (``key``, ..., newline), runs out of
    time or writes more than ``hard_cap`` bytes; the state (``exited``, ``timeout``, ``too_large``) and the bytes."""
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
            finished = key in bufs[out_fd] and bufs[out_fd].endswith(b"\n")  # the monitor's last words
            if finished or _leader_exited(proc):
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
            for ready, _ in sel.select(min(remaining, 0.05)):
                if not read(ready.fd):
                    sel.unregister(ready.fd)
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
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _message(out: bytes, key: str) -> dict[str, Any]:
    """The monitor's message: the JSON object on the line that starts with this run's key; ``{}`` if none."""
    prefix = key.encode() + b" "
    for line in out.splitlines():
        if line.startswith(prefix):
            try:
                msg = json.loads(line[len(prefix):])
            except ValueError:
                return {}
            return msg if isinstance(msg, dict) else {}
    return {}


def _classify(
    state: str, returncode: int, out: bytes, err: bytes, elapsed: float, spec: _Spec, key: str
) -> tuple[ExecResult, dict[str, Any]]:
    if state == "timeout":
        return ExecResult(False, None, "timeout", f"no result within {spec.timeout_s:g} s (wall clock)", elapsed), {}
    if state == "too_large":
        msg = f"program output exceeded {spec.max_output_bytes} characters"
        return ExecResult(False, None, "output_too_large", msg, elapsed), {}
    msg = _message(out, key)
    raw = msg.get("result")
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
        return result, msg
    # No result: the program's process (msg["status"]), or the monitor itself, died before it could report.
    status = msg.get("status")
    returncode = status if isinstance(status, int) and not isinstance(status, bool) else returncode
    tail = err.decode("utf-8", "replace").strip()[-1000:]
    if returncode in (-signal.SIGXCPU, -signal.SIGALRM):
        return ExecResult(False, None, "timeout", "CPU time limit exceeded", elapsed), msg
    if returncode == -signal.SIGKILL or "MemoryError" in tail:
        return ExecResult(False, None, "memory", f"killed (likely out of memory). {tail}".strip(), elapsed), msg
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return ExecResult(False, None, "exception", f"program crashed with signal {name}. {tail}".strip(), elapsed), msg
    text = f"program exited with status {returncode} without a result. {tail}".strip()
    return ExecResult(False, None, "exception", text, elapsed), msg
