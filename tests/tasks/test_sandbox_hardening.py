"""Sandbox hardening: no metadata changes outside, no root, no forks without seccomp, no forged results."""

from __future__ import annotations

import logging
import os
import stat
import sys

import psutil
import pytest

import openrft.tasks.sandbox as sandbox
from openrft.tasks.sandbox import run_program, run_programs, sandbox_layers

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox layers")


@pytest.fixture(scope="module")
def layers() -> dict[str, bool]:
    return sandbox_layers()


def _weaken(monkeypatch, tmp_path, *names: str) -> None:
    """Run the real child program with the layer functions ``names`` switched off."""
    script = tmp_path / "weakened_child.py"
    off = "".join(f"sandbox_child.{name} = lambda *args: False\n" for name in names)
    script.write_text(f"import sys\nsys.path.insert(0, {str(sandbox.CHILD_SCRIPT.parent)!r})\n"
                      f"import sandbox_child\n{off}sandbox_child.main()\n")
    monkeypatch.setattr(sandbox, "CHILD_SCRIPT", script)


def _sandbox_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("OPENRFT_SANDBOX", "").startswith(f"{os.getpid()}-") \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


# ---- 1. file metadata outside the working directory -------------------------------------------

METADATA_ATTACK = '''
import ctypes, os
TARGET, PARENT = {target!r}, {parent!r}

def solution():
    fd = os.open(TARGET, os.O_RDONLY)
    dfd = os.open(PARENT, os.O_RDONLY)
    uid, gid = os.getuid(), os.getgid()
    attempts = []  # the mode changes last: a file of mode 0 would refuse the others for lack of permission
    if os.uname().machine == "x86_64":  # the legacy calls, straight through libc
        libc = ctypes.CDLL(None, use_errno=True)
        path = TARGET.encode()
        for name, args in (("sys_utime", (132, path, None)), ("sys_utimes", (235, path, None)),
                           ("sys_futimesat", (261, -100, path, None)), ("sys_chown", (92, path, uid, gid)),
                           ("sys_lchown", (94, path, uid, gid)), ("sys_chmod", (90, path, 0o600))):
            attempts.append((name, lambda args=args: libc.syscall(*args) == 0 or 1 / 0))
    attempts += [
        ("setxattr", lambda: os.setxattr(TARGET, "user.openrft", b"1")),
        ("removexattr", lambda: os.removexattr(TARGET, "user.keep")),
        ("utime", lambda: os.utime(TARGET, (0, 0))),
        ("futimens", lambda: os.utime(fd, (0, 0))),
        ("chown", lambda: os.chown(TARGET, uid, gid)),
        ("fchown", lambda: os.fchown(fd, uid, gid)),
        ("lchown", lambda: os.lchown(TARGET, uid, gid)),
        ("chmod_parent", lambda: os.chmod(PARENT, 0o777)),
        ("fchmodat", lambda: os.chmod("victim.txt", 0o600, dir_fd=dfd)),
        ("fchmod", lambda: os.fchmod(fd, 0o640)),
        ("chmod", lambda: os.chmod(TARGET, 0)),
    ]
    done = []
    for name, attempt in attempts:
        try:
            attempt()
        except (OSError, ZeroDivisionError):
            continue
        done.append(name)
    return "changed: " + " ".join(done)
'''


def _snapshot(target, parent) -> tuple:
    st, pst = os.stat(target), os.stat(parent)
    try:
        xattrs = sorted(os.listxattr(target))
    except OSError:
        xattrs = []
    return stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid, stat.S_IMODE(pst.st_mode), xattrs


@linux_only
@pytest.mark.parametrize("weakened", [(), ("drop_privileges",)], ids=["full", "without_privilege_drop"])
def test_metadata_outside_the_workdir_unchanged(monkeypatch, tmp_path, layers, weakened):
    """chmod/chown/utime/xattr calls on a file outside the sandbox (and chmod of its directory) all fail; without
    the privilege drop (a root program owns the file) seccomp alone refuses them."""
    if not layers["seccomp"]:
        pytest.skip("no seccomp on this machine")
    parent = tmp_path / "outside"
    parent.mkdir(mode=0o755)
    target = parent / "victim.txt"
    target.write_text("data")
    target.chmod(0o644)
    os.utime(target, (1_000_000, 1_000_000))
    if os.geteuid() == 0:
        os.chown(target, -1, 65534)  # so a chgrp back to the owner's group 0 would show
    try:
        os.setxattr(target, "user.keep", b"1")
    except OSError:
        pass  # no user xattrs on this file system
    before = _snapshot(target, parent)
    if weakened:
        _weaken(monkeypatch, tmp_path, *weakened)
    result = run_program(METADATA_ATTACK.format(target=str(target), parent=str(parent)), timeout_s=5.0)
    assert result.ok, result
    assert result.value == "changed: ", result.value
    assert _snapshot(target, parent) == before


# ---- 2. privilege drop and RLIMIT_NPROC ------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the privilege drop is for a root parent")
def test_root_parent_runs_programs_unprivileged(layers):
    code = (
        "import os, shutil, tempfile\ndef solution():\n"
        "    with open('notes.txt', 'w') as f:\n        f.write('12')\n"
        "    os.makedirs('a/b')\n    shutil.copyfile('notes.txt', 'a/b/copy.txt')\n"
        "    with tempfile.TemporaryDirectory() as d:\n        open(os.path.join(d, 'x'), 'w').write('1')\n"
        "    return f'{os.geteuid()} {os.getuid()} {os.getegid()} {os.getgroups()} {os.getcwd()}'\n"
    )
    result = run_program(code, timeout_s=5.0)
    assert result.ok, result
    euid, uid, egid, groups, cwd = result.value.split(" ", 4)
    assert euid != "0" and uid != "0" and egid != "0" and groups == "[]"
    assert not os.path.exists(cwd)  # the parent still removed the working directory
    assert layers["drop_privileges"] and layers["nproc"]


@linux_only
def test_fork_refused_by_nproc_without_seccomp(monkeypatch, tmp_path):
    _weaken(monkeypatch, tmp_path, "seccomp")
    fork = (
        "import ctypes, os\ndef solution():\n    pid = ctypes.CDLL(None).fork()\n"
        "    if pid == 0:\n        os._exit(0)\n    return pid\n"
    )
    assert run_program(fork, timeout_s=5.0).value == "-1"
    assert _sandbox_processes() == []
    layers = sandbox_layers()
    assert layers["seccomp"] is False and layers["nproc"] is True


def test_layers_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "_layers_logged", False)
    with caplog.at_level(logging.INFO, logger="openrft.tasks.sandbox"):
        run_programs(["x = 1"], entry=None)
        run_programs(["x = 2", "x = 3"], entry=None, max_workers=2)
    messages = [r.getMessage() for r in caplog.records if "sandbox layers" in r.getMessage()]
    assert len(messages) == 1 and "python_guards" in messages[0], messages


# ---- 3. the result channel ---------------------------------------------------------------------

FORGED = repr(b'{"ok": true, "value": 42}\n')
EVERY_FD = (
    "import os\ndef forge():\n    for fd in os.listdir('/proc/self/fd'):\n        try:\n"
    f"            os.write(int(fd), {FORGED})\n        except OSError:\n            pass\n"
)
# finds the worker's nonce and result pipe in its caller's frame: it can then claim a value, no more
WITH_NONCE = (
    "import json, os, sys\ndef forge(result):\n    f = sys._getframe()\n"
    "    while f is not None and 'nonce' not in f.f_locals:\n        f = f.f_back\n"
    "    nonce, fd = f.f_locals['nonce'], f.f_locals['fd']\n"
    "    os.write(fd, nonce + b' L ' + json.dumps({'seccomp': False, 'landlock': False}).encode() + b'\\n')\n"
    "    os.write(fd, nonce + b' R ' + json.dumps(result).encode() + b'\\n')\n"
)
FORGERIES = {
    # fd 3 held the result before the fix
    "result_fd": f"import os\ndef solution():\n    try:\n        os.write(3, {FORGED})\n"
                 "    finally:\n        os._exit(0)\n",
    "every_fd": EVERY_FD + "def solution():\n    forge()\n    os._exit(0)\n",
    "every_fd_then_return": EVERY_FD + "def solution():\n    forge()\n    return 7\n",
    "every_fd_then_loop": EVERY_FD + "def solution():\n    forge()\n    while True:\n        pass\n",
    "monitor_fds": (
        "import os\ndef solution():\n    opened = []\n    for fd, mode in (('0', 'rb'), ('1', 'wb'), ('1', 'rb')):\n"
        "        try:\n            open(f'/proc/{os.getppid()}/fd/{fd}', mode, buffering=0)\n"
        "        except OSError:\n            continue\n        opened.append(fd + mode)\n    return str(opened)\n"
    ),
    "pipe_flood": (
        "import os\ndef solution():\n    for fd in os.listdir('/proc/self/fd'):\n        try:\n"
        "            os.write(int(fd), b'x' * 200_000)\n        except OSError:\n            pass\n    return 1\n"
    ),
    "nonce_over_cap": WITH_NONCE + "def solution():\n    forge({'ok': True, 'value': '42', 'stdout': 'x' * 5000})\n"
                                   "    os._exit(0)\n",
    "nonce_then_loop": WITH_NONCE + "def solution():\n    forge({'ok': True, 'value': '42'})\n"
                                    "    while True:\n        pass\n",
}


@pytest.fixture(scope="module")
def forged():
    names = list(FORGERIES)
    results = run_programs([FORGERIES[n] for n in names], timeout_s=1.0, max_output_bytes=1024, max_workers=4)
    return dict(zip(names, results))


@linux_only
@pytest.mark.parametrize("name", ["result_fd", "every_fd"])
def test_forged_result_rejected(forged, name):
    result = forged[name]
    assert not result.ok and result.value is None and result.error == "exception", result
    assert "without a result" in result.message


@linux_only
def test_forged_lines_ignored(forged):
    assert forged["every_fd_then_return"].value == "7"
    assert forged["every_fd_then_loop"].error == "timeout"
    assert forged["monitor_fds"].value == "[]"  # the monitor's descriptors are out of reach
    assert forged["pipe_flood"].error == "output_too_large"  # the monitor reads a bounded amount


@linux_only
def test_program_holding_the_nonce_claims_no_more_than_a_return_value(forged):
    assert forged["nonce_over_cap"].error == "output_too_large"  # the output cap is applied again
    assert forged["nonce_then_loop"].error == "timeout"  # no early result past the wall-clock limit
    spec = sandbox._Spec("solution", sandbox._token(), 5.0, 256, 1024, 0)
    code = WITH_NONCE + "def solution():\n    forge({'ok': True, 'value': '42'})\n    os._exit(0)\n"
    result, raw = sandbox._run_one(code, spec)
    assert result.value == "42"  # what it could have returned
    assert raw["layers"] == sandbox_layers()  # the report was sent before the program ran
