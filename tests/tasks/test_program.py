"""Program-of-thought task and its sandbox: generated code runs only in limited child processes."""

from __future__ import annotations

import builtins
import os
import socket
import sys
import time

import psutil
import pytest

from openrft.data.sample import Sample
from openrft.tasks import get_task
from openrft.tasks.program import ProgramTask, extract_code
from openrft.tasks.sandbox import ExecResult, run_programs, sandbox_layers

TIMEOUT = 2.0


def _sandbox_processes() -> list[psutil.Process]:
    """Live processes started by this test process's sandbox (they carry its pid in their environment)."""
    found = []
    for proc in psutil.process_iter():
        try:
            token = proc.environ().get("OPENRFT_SANDBOX", "")
            if token.startswith(f"{os.getpid()}-") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


@pytest.fixture(scope="module")
def layers() -> dict[str, bool]:
    return sandbox_layers()


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def batch(listener, outside_dir):
    """One parallel sandbox call over every behaviour under test (keeps the module fast)."""
    port = listener.getsockname()[1]
    outside = outside_dir / "escaped.txt"
    programs = {
        "correct": "def solution():\n    return 6 * 7\n",
        "float": "def solution():\n    return 1 / 3\n",
        "prints": "print('hello')\ndef solution():\n    return 2\n",
        "syntax": "def solution(:\n    return 1\n",
        "exception": "def solution():\n    return 1 / 0\n",
        "no_entry": "x = 1\n",
        "exit": "import sys\nsys.exit(3)\n",
        "loop": "def solution():\n    while True:\n        pass\n",
        "bytearray": "def solution():\n    x = bytearray(10**10)\n    return len(x)\n",
        "growing": "def solution():\n    x = []\n    while True:\n        x.append(' ' * 4096 + str(len(x)))\n",
        "print_flood": "def solution():\n    while True:\n        print('x' * 1000)\n",
        "socket": (
            "import socket\ndef solution():\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "    except OSError as e:\n        return 'blocked ' + type(e).__name__\n    return 'connected'\n"
        ),
        "raw_socket": (
            "import _socket\ndef solution():\n    try:\n        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"        s.connect(('127.0.0.1', {port}))\n"
            "    except OSError as e:\n        return 'blocked ' + type(e).__name__\n    return 'connected'\n"
        ),
        "fork_bomb": "import os\ndef solution():\n    while True:\n        os.fork()\n",
        "fork_libc": (
            "import ctypes, os\ndef solution():\n    pid = ctypes.CDLL(None).fork()\n"
            "    if pid == 0:\n        os._exit(0)\n    return pid\n"
        ),
        "subprocess": "import subprocess\ndef solution():\n    subprocess.Popen(['sleep', '30'])\n    return 1\n",
        "kill_parent": f"import ctypes\ndef solution():\n    return ctypes.CDLL(None).kill({os.getpid()}, 0)\n",
        "raise_limit": (
            "import resource\ndef solution():\n"
            "    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "    return 1\n"
        ),
        "big_file": "def solution():\n    with open('big.bin', 'wb') as f:\n        f.write(b'x' * 10**7)\n    return 1\n",
        "small_file": (
            "def solution():\n    with open('notes.txt', 'w') as f:\n        f.write('12')\n"
            "    return open('notes.txt').read()\n"
        ),
        "outside_write": f"def solution():\n    open({str(outside)!r}, 'w').write('x')\n    return 1\n",
        "state": (
            "import builtins, os, sys\nos.environ['OPENRFT_LEAK'] = '1'\nos.chdir('/')\n"
            "sys.path.insert(0, '/nowhere')\nbuiltins.len = None\ndef solution():\n    return 5\n"
        ),
    }
    names = list(programs)
    start = time.monotonic()
    results = run_programs([programs[n] for n in names], timeout_s=TIMEOUT, memory_mb=256, max_workers=4)
    return {"results": dict(zip(names, results)), "elapsed": time.monotonic() - start, "outside": outside}


def test_correct_and_wrong_programs(batch):
    r = batch["results"]
    assert r["correct"] == ExecResult(True, "42", None, "", r["correct"].elapsed, "")
    assert r["float"].ok and r["float"].value == pytest.approx(1 / 3)
    assert r["prints"].value == "2" and r["prints"].stdout == "hello\n"


@pytest.mark.parametrize(
    "name,kind,fragment",
    [
        ("syntax", "syntax", "SyntaxError"),
        ("exception", "exception", "ZeroDivisionError"),
        ("no_entry", "no_entry", "solution()"),
        ("exit", "exception", "exit(3)"),
        ("print_flood", "output_too_large", "exceeded"),
        ("big_file", "exception", "File too large"),
        ("raise_limit", "exception", ""),
    ],
)
def test_failures_are_classified(batch, name, kind, fragment):
    result = batch["results"][name]
    assert not result.ok and result.value is None
    assert result.error == kind, result
    assert fragment in result.message


def test_infinite_loop_times_out_quickly(batch):
    result = batch["results"]["loop"]
    assert result.error == "timeout"
    assert TIMEOUT - 0.1 <= result.elapsed <= TIMEOUT + 1.0
    assert batch["elapsed"] < 3 * TIMEOUT + 5  # the slow programs ran side by side


def test_memory_bombs(batch):
    assert batch["results"]["bytearray"].error == "memory"
    assert batch["results"]["growing"].error in ("memory", "timeout", "exception")


def test_no_network(batch, listener):
    for name in ("socket", "raw_socket"):
        result = batch["results"][name]
        assert result.value is None or str(result.value).startswith("blocked"), result
        assert result.ok or result.error == "exception"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever reached the listening socket


def test_no_new_processes(batch, layers):
    assert batch["results"]["fork_bomb"].error == "exception"
    assert "disabled" in batch["results"]["fork_bomb"].message
    assert batch["results"]["subprocess"].error == "exception"
    if layers["seccomp"]:
        assert batch["results"]["fork_libc"].value == "-1"  # fork through libc refused by seccomp
        assert batch["results"]["kill_parent"].value == "-1"  # no signals to processes outside
    assert _sandbox_processes() == []


def test_file_writes_bounded(batch, layers):
    assert batch["results"]["small_file"].value == "12"  # its own working directory is writable
    if layers["landlock"]:
        assert batch["results"]["outside_write"].error == "exception"
        assert not batch["outside"].exists()


def test_main_process_unaffected(batch):
    cwd = os.getcwd()
    assert batch["results"]["state"].value == "5"
    assert os.getcwd() == cwd and "OPENRFT_LEAK" not in os.environ
    assert "/nowhere" not in sys.path and builtins.len is len


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process sweep reads /proc")
def test_escaped_processes_swept_without_seccomp(monkeypatch, tmp_path):
    """Without seccomp and RLIMIT_NPROC, a libc fork + setsid leaves the process group; the batch sweep kills it."""
    import openrft.tasks.sandbox as sandbox

    # the real child program with its seccomp and nproc layers switched off
    weakened = tmp_path / "child_without_seccomp.py"
    weakened.write_text(f"import sys\nsys.path.insert(0, {str(sandbox.CHILD_SCRIPT.parent)!r})\n"
                        "import sandbox_child\nsandbox_child.seccomp = sandbox_child.nproc = lambda: False\n"
                        "sandbox_child.main()\n")
    monkeypatch.setattr(sandbox, "CHILD_SCRIPT", weakened)
    assert sandbox.sandbox_layers()["seccomp"] is False
    escape = (
        "import ctypes, os, time\ndef solution():\n    libc = ctypes.CDLL(None)\n    pid = libc.fork()\n"
        "    if pid == 0:\n        libc.setsid()\n        time.sleep(30)\n        os._exit(0)\n    return pid\n"
    )
    bomb = (
        "import ctypes\ndef solution():\n    libc = ctypes.CDLL(None)\n"
        "    for _ in range(4):\n        libc.fork()\n    while True:\n        pass\n"
    )
    results = run_programs([escape, bomb], timeout_s=1.0, memory_mb=128)
    assert results[0].ok and int(results[0].value) > 0  # the fork did happen
    assert results[1].error == "timeout"
    time.sleep(0.1)
    assert _sandbox_processes() == []


def test_batch_of_twenty_in_parallel():
    codes = [f"def solution():\n    return {i} * {i}\n" for i in range(20)]
    start = time.monotonic()
    results = run_programs(codes, timeout_s=5.0)
    assert [r.value for r in results] == [str(i * i) for i in range(20)]
    assert time.monotonic() - start < 20
    assert _sandbox_processes() == []


def test_arguments_checked():
    assert run_programs([]) == []
    with pytest.raises(ValueError, match="timeout_s"):
        run_programs(["x = 1"], timeout_s=0)
    with pytest.raises(TypeError, match="codes\\[0\\]"):
        run_programs([b"x = 1"])  # type: ignore[list-item]


# ---- the task ---------------------------------------------------------------------------

NATALIA = Sample(
    id="gsm8k-0",
    task="gsm8k",
    question=(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    ),
    answer="72",
    answer_type="program",
)
# ReFT's P-CoT (python SDP) format: the program is the whole reply, no code fence.
REFT_PROGRAM = '''def solution():
    """Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."""
    clips_april = 48
    clips_may = clips_april / 2
    clips_total = clips_april + clips_may
    result = clips_total
    return result'''


def test_registered_and_prompt():
    task = get_task("program")
    assert isinstance(task, ProgramTask)
    prompt = task.user_prompt(NATALIA)
    assert "solution()" in prompt and NATALIA.question in prompt
    assert task.render_answer(NATALIA) == "```python\ndef solution():\n    return 72\n```"
    with_program = NATALIA.replace(meta={"program": REFT_PROGRAM})
    assert extract_code(task.render_answer(with_program)) == REFT_PROGRAM


def test_reft_gsm8k_program_graded(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("generated code must not run in the main process")

    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    task = ProgramTask(timeout_s=TIMEOUT)
    completions = [
        REFT_PROGRAM,
        f"Let me write it.\n```python\n{REFT_PROGRAM}\n```\nThis returns 72.",
        REFT_PROGRAM.replace("/ 2", "* 2"),  # wrong: 144
        "def solution():\n    while True:\n        pass",
        "The answer is 72.",  # no program at all
        task.render_answer(NATALIA),
    ]
    grades = task.grade_batch(completions, [NATALIA] * len(completions))
    assert [(g.extracted, g.correct) for g in grades] == [
        ("72", True), ("72", True), ("144", False), (None, False), (None, False), ("72", True),
    ]
    assert [g.score for g in task.grade_batch(completions[:3], [NATALIA] * 3)] == [1.0, 1.0, 0.0]
    assert task.grade(REFT_PROGRAM, NATALIA).correct
    with pytest.raises(ValueError):
        task.grade_batch(completions, [NATALIA])


def test_numeric_tolerance():
    task = ProgramTask()
    sample = NATALIA.replace(answer="0.3")
    assert task.is_equivalent("0.30000000000000004", sample)
    assert not task.is_equivalent("0.31", sample)
    assert ProgramTask(abs_tol=0.02).is_equivalent("0.31", sample)


def test_extract_code_variants():
    assert extract_code("```py\nimport math\n```\n```python\ndef solution():\n    return 1\n```") == (
        "def solution():\n    return 1"
    )
    # unterminated fence, printing call after the function
    assert extract_code("```python\ndef solution():\n    return 2\n\nprint(solution())") == (
        "def solution():\n    return 2\n\nprint(solution())"
    )
    raw = "Answer reasoning:\nfrom math import sqrt\n\ndef solution():\n    return sqrt(16)\n\nresult = solution()\nSo 4."
    assert extract_code(raw) == "from math import sqrt\ndef solution():\n    return sqrt(16)\n\nresult = solution()"
    assert extract_code("def other():\n    return 1") is None
