"""keep_freed_memory: large freed blocks stay in the process (no page faults on reuse), opt-outs respected.

Each case runs in a fresh interpreter: malloc settings are per process and the function applies once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

PROBE = """
import json, resource, torch
from openrft.models.allocator import keep_freed_memory
active = keep_freed_memory()
faults = []
for _ in range(3):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        x = torch.ones(16 * 2**20)  # 64 MB, above glibc's largest mmap threshold
        del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"active": active, "again": keep_freed_memory(), "faults": faults}))
"""


def probe(**env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "OPENRFT_MALLOC")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults():
    kept = probe()
    assert kept["active"] is True and kept["again"] is True
    # 64 MB = 16384 pages: the first rounds fault the heap in, then the same memory is reused
    assert kept["faults"][0] > 10_000
    assert kept["faults"][-1] < 1_000


def test_system_default_faults_every_time():
    system = probe(OPENRFT_MALLOC="system")
    assert system["active"] is False
    assert min(system["faults"]) > 8 * 16_000  # each 64 MB block is a fresh mmap, faulted in page by page


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}])
def test_user_malloc_settings_win(env):
    assert probe(**env)["active"] is False


@pytest.mark.parametrize("argv, applied", [(["eval", "--data", "no-such-dataset"], True), (["data", "list"], None)])
def test_cli_applies_it_for_commands_that_compute(argv, applied):
    code = ("import json, sys; from openrft.cli.main import main; from openrft.models import allocator\n"
            "try:\n    main(json.loads(sys.argv[1]))\nexcept SystemExit:\n    pass\n"
            "print('applied', allocator.kept_memory_status())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "OPENRFT_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], env=env, capture_output=True, text=True)
    assert f"applied {applied}" in out.stdout.splitlines()[-1]


RELEASE = """
import json, resource, torch
from openrft.models.allocator import keep_freed_memory, release_freed_memory
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
active = keep_freed_memory()
x = torch.ones(64 * 2**20)  # 256 MB
del x
kept = rss_mb()
released = release_freed_memory()
print(json.dumps({"active": active, "kept": kept, "released": released, "after": rss_mb()}))
"""


def test_freed_memory_goes_back_on_release():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "OPENRFT_MALLOC"}
    out = subprocess.run([sys.executable, "-c", RELEASE], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["active"] is True and got["released"] is True
    assert got["kept"] - got["after"] > 200  # MB: the freed tensor's pages left the process
    system = subprocess.run([sys.executable, "-c", RELEASE], env=env | {"OPENRFT_MALLOC": "system"},
                            capture_output=True, text=True, check=True)
    assert json.loads(system.stdout.strip().splitlines()[-1])["released"] is False  # nothing kept, nothing to do
