"""Fixtures for the export tests: a module loader that imports a reward file the way the engines do,
and a real local PRM server speaking openrft's scoring protocol."""

from __future__ import annotations

import importlib.util
import sys
import uuid

import pytest

from openrft.rewards.prm.base import ProcessScorer


class ArithmeticChecker(ProcessScorer):
    """A deterministic toy PRM: 0.9 for a step with an '=', 0.3 for any other step."""

    name = "arith-checker"

    def score_batch(self, questions, steps):
        return [[0.9 if "=" in st else 0.3 for st in sts] for sts in steps]


def import_by_path(path, module_name: str):
    """Import a file as verl 0.9 (``load_module`` for custom_reward_function.path) and OpenRLHF 0.11
    (``--reward.remote_url x.py``) do: a spec from the file, executed, not registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(module_name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_reward_module():
    def load(path, module_name: str = "custom_module"):
        name = f"{module_name}_{uuid.uuid4().hex[:8]}"
        module = import_by_path(path, name)
        assert name not in sys.modules
        return module

    return load


@pytest.fixture
def prm_server():
    """``(url, scorer)`` of a real HTTP scorer on a free local port."""
    from openrft.rewards.prm.remote import serve_scorer

    scorer = ArithmeticChecker()
    server = serve_scorer(scorer, host="127.0.0.1", port=0, block=False)
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/score", scorer
    server.shutdown()
    server.server_close()
