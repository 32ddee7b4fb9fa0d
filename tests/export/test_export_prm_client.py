"""The exported reward's PRM client (standard library only): retries what a retry can fix, fails at once on a bad
request or reply, names the URL and the last error; and ``openrft prm serve``, the server it talks to on a cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from scripted_http import scripted  # noqa: F401  (a fixture)

from openrft.export.prm_client import PRMClient, PRMClientError


def client(url: str, **kw) -> PRMClient:
    return PRMClient(url, backoff_s=0.01, **{"max_retries": 2, "timeout_s": 5, **kw})


def test_retries_a_busy_server_then_scores(scripted):  # noqa: F811
    script, url = scripted([(503, b"busy"), (429, {"error": "slow down"}, {"Retry-After": "0.2"}),
                            (200, {"scores": [[0.25, 0.75]]})])
    start = time.monotonic()
    assert client(url).score_batch(["q", "r"], [["a", "b"], []]) == [[0.25, 0.75], []]
    assert len(script.requests) == 3 and time.monotonic() - start >= 0.2
    assert script.requests[0][2] == {"items": [{"question": "q", "steps": ["a", "b"]}]}  # no request for no steps


def test_a_bad_request_or_reply_fails_at_once(scripted):  # noqa: F811
    script, url = scripted([(400, {"error": "steps must be strings"})] * 3)
    with pytest.raises(PRMClientError, match="rejected with status 400: steps must be strings"):
        client(url).score("q", ["a"])
    assert len(script.requests) == 1
    script, url = scripted([(200, {"scores": [[1.5]]})] * 3)
    with pytest.raises(PRMClientError, match=r"outside \[0, 1\]"):
        client(url).score("q", ["a"])
    assert len(script.requests) == 1


def test_a_server_that_is_down_is_named_after_the_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/score"
    with pytest.raises(PRMClientError) as info:
        client(url, max_retries=1).score("q", ["a"])
    err = info.value
    assert err.url == url and err.status is None and "failed after 2 attempts (no response)" in str(err)
    assert "openrft prm serve" in str(err)


def test_openrft_prm_serve_answers_the_exported_client(tiny_model_dir):
    """... and stops on SIGINT, also when started with SIGINT ignored (as a script's background job is)."""
    proc = subprocess.Popen([sys.executable, "-m", "openrft.cli.main", "prm", "serve", "--prm",
                             f"judge:{tiny_model_dir}", "--port", "0", "--device", "cpu"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = ""
        deadline = time.monotonic() + 240
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
        assert "serving" in line, line
        url = line.split(" at ")[1].split()[0]
        scores = PRMClient(url).score_batch(["What is 2 + 3?"], [["2 + 3 = 5", "So the answer is 5."]])
        assert len(scores[0]) == 2 and all(0.0 <= x <= 1.0 for x in scores[0])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # a server that ignored SIGINT does not outlive the test
            raise
        assert code == 0


def test_openrft_prm_serve_refuses_a_missing_checkpoint(tmp_path, capsys):
    from openrft.cli.main import main

    assert main(["prm", "serve", "--prm", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openrft prm serve: ") and "Traceback" not in err
