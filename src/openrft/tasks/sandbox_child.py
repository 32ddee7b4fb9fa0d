"""The sandbox's child program (:mod:`openrft.tasks.sandbox` starts it as ``python -I -B <this file>``).

It runs in the program's fresh working directory, reads ``payload.json`` there (the code, the entry function, the
limits and, under root, the unprivileged uid and gid that own the directory), deletes it and forks:

* the **worker** points stdin and stdout at ``/dev/null`` (stderr stays, for crash reports), applies the sandbox
  layers, then sends the monitor a layers report, runs the program and sends its result. Both are lines on a pipe
  that start with a random nonce, so output the program writes to its descriptors is ignored;
* the **monitor** (this process) never runs untrusted code and is not dumpable, so the worker can open neither its
  descriptors nor its memory through ``/proc``. After the fork it reads the parent's per-run key from stdin (the
  worker never held it), collects the worker's lines (past a byte limit it kills the worker), waits for the worker,
  and writes the parent one line: the key, then a JSON object with the layers report, the result (``null`` when the
  worker died without one) and the worker's exit status.

A program that digs the nonce out of its memory can at most claim a value it could have returned: the layers report
is the first line, sent before the program starts; nothing reaches the parent before the worker exits, so the
parent's wall-clock limit still holds; and the monitor checks the result's fields and the output cap again.

Standard library only, plus ``sandbox_seccomp.py`` next to this file (an isolated interpreter sees neither openrft
nor this directory). Every layer is a module-level function, so a test can run the child with one switched off.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import resource
import select
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from sandbox_seccomp import seccomp
finally:
    del sys.path[0]  # the program must not import this directory's modules


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


def capset(mask: int) -> bool:
    """Keep only the capabilities in ``mask``, effective and permitted (Linux)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    low, high = mask & 0xFFFFFFFF, mask >> 32
    data = (Data * 2)(Data(low, low, 0), Data(high, high, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0  # _LINUX_CAPABILITY_VERSION_3


def drop_caps() -> bool:
    """As root, give up every capability (Linux). Not root: nothing to do (see :func:`drop_privileges`)."""
    if os.geteuid() != 0:
        return True
    return sys.platform == "linux" and capset(0)


def readable_as(uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` can open every directory Python imports from (probed with temporary effective ids)."""
    dirs = [d for d in sys.path if os.path.isdir(d)]
    egid = os.getegid()
    os.setegid(gid)
    os.seteuid(uid)
    try:
        for d in dirs:
            try:
                os.close(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
            except OSError:
                return False
        return True
    finally:
        os.seteuid(0)
        os.setegid(egid)


def drop_privileges(ids: list[int] | None) -> bool:
    """As root, become the unprivileged ``ids`` (uid, gid) that own the working directory; whether not root now.

    Where that uid cannot read the directories Python imports from (an interpreter under ``/root``), the process
    keeps ``CAP_DAC_READ_SEARCH`` (Linux only): it reads what root reads, as a root sandbox did, and nothing more.
    """
    if os.geteuid() != 0:
        return True
    if not ids:
        return False
    uid, gid = ids
    os.setgroups([])
    keep_read = not readable_as(uid, gid)
    if keep_read and sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if keep_read and libc.prctl(8, 1, 0, 0, 0):  # PR_SET_KEEPCAPS
        return False
    os.setgid(gid)
    os.setuid(uid)
    if keep_read and (not capset(1 << 2) or libc.prctl(8, 0, 0, 0, 0)):  # CAP_DAC_READ_SEARCH only
        os._exit(70)  # never run a program that could raise its permitted capabilities again
    if sys.platform == "linux":
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no set-uid program takes it back to root
    return os.getuid() != 0 and os.geteuid() != 0


def nproc() -> bool:
    """``RLIMIT_NPROC`` of 1: this process already counts, so no fork succeeds; root is exempt."""
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    return os.getuid() != 0


def set_dumpable(on: bool) -> None:
    """``PR_SET_DUMPABLE``: a process that is not dumpable keeps its ``/proc`` descriptors and memory to itself."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(4, int(on), 0, 0, 0)


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


def backstops(ppid: int, seconds: float) -> None:
    """SIGKILL when the parent dies, SIGALRM after ``seconds`` (should the parent fail to kill us); exit at once if
    the parent is already gone."""
    try:
        if sys.platform == "linux":
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != ppid:
        os._exit(3)
    signal.alarm(int(seconds))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail with EFBIG instead


def apply_layers(p: dict) -> dict[str, bool]:
    """The privilege drop, resource limits, Landlock, dropped capabilities, seccomp and Python guards; which held."""
    layers = {}
    try:
        layers["drop_privileges"] = bool(drop_privileges(p["run_as"]))
    except Exception:
        layers["drop_privileges"] = False
    mb, cpu = p["memory_mb"], int(p["timeout_s"]) + 1
    limits = [(resource.RLIMIT_AS, mb << 20, mb << 20), (resource.RLIMIT_CPU, cpu, cpu + 1),
              (resource.RLIMIT_FSIZE, p["max_file_bytes"], p["max_file_bytes"]), (resource.RLIMIT_CORE, 0, 0)]
    layers["rlimits"] = True
    for res, soft, hard in limits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            layers["rlimits"] = False
    for name, fn in (("nproc", nproc), ("landlock", lambda: landlock(".")), ("drop_caps", drop_caps),
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


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, nonce: bytes, kind: bytes, obj: dict) -> None:
    """One line to the monitor: the nonce, the kind (``L`` layers, ``R`` result) and ``obj`` as JSON."""
    try:
        text = json.dumps(obj)
    except Exception as e:
        text = json.dumps({"ok": False, "error": "exception", "message": f"unreportable result: {e}"})
    write_all(fd, nonce + b" " + kind + b" " + text.encode() + b"\n")


def worker(p: dict, fd: int, nonce: bytes, monitor_pid: int) -> None:
    """The forked process: closes the parent's descriptors, applies the layers, runs the program, reports on ``fd``."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    set_dumpable(True)  # so a parent of the same uid can still find it in /proc (see sandbox._sweep)
    cap = p["max_output_bytes"]
    out, err = Capped(cap), Capped(cap)
    sys.stdout, sys.stderr = out, err
    layers = apply_layers(p)
    backstops(monitor_pid, p["timeout_s"] + 3)  # after the privilege drop, which clears the parent-death signal
    send(fd, nonce, b"L", layers)
    res = {"ok": False, "value": None, "error": None, "message": ""}
    run(p, res)
    if out.overflow or err.overflow:
        res.update(ok=False, value=None, error="output_too_large", message=f"program output exceeded {cap} characters")
    res["stdout"] = out.getvalue()
    if res["error"] == "exception" and err.parts:
        res["message"] = (res["message"] + "\nstderr: " + err.getvalue()[-1000:])[:4000]
    send(fd, nonce, b"R", res)
    os._exit(0)


def collect(fd: int, pid: int, limit: int) -> tuple[bytes | None, int]:
    """The worker's bytes, up to end of file or, should a stray process hold the pipe open, until the worker has
    exited and the pipe is drained; and its exit status. ``None`` past ``limit`` bytes (the worker is killed)."""
    buf = bytearray()
    os.set_blocking(fd, False)
    done, status = 0, 0
    while True:
        if not done and not select.select([fd], [], [], 0.05)[0]:
            done, status = os.waitpid(pid, os.WNOHANG)
            continue
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            if done:
                break
            continue
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            if not done:
                os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
            return None, os.waitstatus_to_exitcode(status)
    if not done:
        done, status = os.waitpid(pid, 0)
    return bytes(buf), os.waitstatus_to_exitcode(status)


def frame(line: bytes, prefix: bytes) -> dict | None:
    """The JSON object after ``prefix`` on ``line``, or ``None``."""
    if not line.startswith(prefix):
        return None
    try:
        obj = json.loads(line[len(prefix):])
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def checked(raw: dict, cap: int) -> dict:
    """The result's known fields with their types checked, and the output cap applied again."""
    value, stdout, error, message = (raw.get(k) for k in ("value", "stdout", "error", "message"))
    stdout = stdout if isinstance(stdout, str) else ""
    error = error if isinstance(error, str) or error is None else "exception"
    if len(stdout) > cap:
        return {"ok": False, "value": None, "error": "output_too_large",
                "message": f"program output exceeded {cap} characters", "stdout": ""}
    return {"ok": raw.get("ok") is True and error is None, "value": value if isinstance(value, (str, float)) else None,
            "error": error, "message": str(message or "")[:4000], "stdout": stdout}


def monitor(p: dict, fd: int, pid: int, nonce: bytes) -> dict:
    """What the parent learns: the layers report (the first line), the first result line, the exit status."""
    cap = p["max_output_bytes"]
    data, status = collect(fd, pid, 32 * cap + (1 << 16))
    if data is None:
        result = {"ok": False, "value": None, "error": "output_too_large",
                  "message": f"program output exceeded {cap} characters", "stdout": ""}
        return {"layers": {}, "result": result, "status": status}
    lines = data.split(b"\n")[:-1]  # complete lines only
    layers = frame(lines[0], nonce + b" L ") if lines else None
    result = next(filter(None, (frame(line, nonce + b" R ") for line in lines[1:])), None)
    return {"layers": layers or {}, "result": None if result is None else checked(result, cap), "status": status}


def main() -> None:
    with open("payload.json", encoding="utf-8") as f:
        p = json.load(f)
    os.unlink("payload.json")
    backstops(p["ppid"], p["timeout_s"] + 5)
    set_dumpable(False)  # before the fork: the worker never sees a dumpable monitor
    nonce = os.urandom(16).hex().encode()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            worker(p, write_end, nonce, os.getppid())
        except BaseException:
            traceback.print_exc(file=sys.__stderr__)
        finally:
            os._exit(1)
    os.close(write_end)
    key = b""
    while chunk := os.read(0, 256):
        key += chunk
    msg = monitor(p, read_end, pid, nonce)
    write_all(1, key.strip() + b" " + json.dumps(msg).encode() + b"\n")
    os._exit(0)


if __name__ == "__main__":
    main()
