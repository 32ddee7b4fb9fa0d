"""``openrft serve`` fairness: how long a short request takes while a long one is decoding.

The same model is served twice in one process (``--batch-size`` rows): by the continuous-batching scheduler
(what the transformers backend gets) and by whole ``generate`` calls (the Batcher that plain generators get,
which is how ``openrft serve`` ran every model before). In each, a short chat request (16 tokens, greedy) is
timed alone, then again once a long streaming request (n = 4, then n = batch size, ``--long-tokens`` each) is
decoding. Prints the short request's latency, when the long one finished, and which came back first; then,
for continuous batching, that a long request whose client leaves stops generating.

    python bench/serve_fairness.py                      # SmolLM2-135M on CPU, batch 8, long 256 tokens
    python bench/serve_fairness.py --long-tokens 64     # quick
"""

from __future__ import annotations

import argparse
import json
import threading
import time


def trial(srv, n: int, long_tokens: int) -> dict:
    """The short request while a long one (n choices) runs; times in seconds from the long request's start."""
    import openai

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    decoding, out = threading.Event(), {}
    start = time.monotonic()

    def long() -> None:
        tokens = 0
        for chunk in client.completions.create(model="m", prompt="Once upon a time", n=n, max_tokens=long_tokens,
                                               temperature=0, stream=True, stream_options={"include_usage": True}):
            decoding.set()
            tokens = chunk.usage.completion_tokens if chunk.usage else tokens
        out["long_done_s"], out["long_tokens"] = time.monotonic() - start, tokens

    thread = threading.Thread(target=long)
    thread.start()
    decoding.wait(timeout=5)  # whole-call serving streams nothing before the end: the long call is running by then
    sent = time.monotonic()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=16,
                                   temperature=0)
    out["short_s"], out["short_done_s"] = time.monotonic() - sent, time.monotonic() - start
    thread.join()
    out["short_first"] = out["short_done_s"] < out["long_done_s"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def alone(srv) -> float:
    import openai

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    sent = time.monotonic()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=16,
                                   temperature=0)
    return round(time.monotonic() - sent, 2)


def cancelled_on_leave(srv) -> dict:
    """A long streaming request whose client leaves after its first tokens: does its generation stop?"""
    import openai

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    sched, before = srv.scheduler, srv.scheduler.cancelled
    stream = client.completions.create(model="m", prompt="Once upon a time", max_tokens=10**9, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 60
    while sched.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"cancelled": sched.cancelled - before, "rows_left": len(sched.batch.rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=256)
    args = parser.parse_args()

    from openrft.models.backends.base import Generator
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.serve import make_server

    engine = TransformersGenerator.from_pretrained(args.model, batch_size=args.batch_size)

    class WholeCalls(Generator):  # only generate(): served by whole calls, as before continuous batching
        def generate(self, prompts, params, progress=None):
            return engine.generate(prompts, params, progress)

    results = {}
    for name, generator in (("continuous batching", engine), ("whole generate calls", WholeCalls())):
        with make_server(generator, "m") as srv:
            alone(srv)  # warm-up
            results[name] = {"short alone": alone(srv)}
            for n in (4, args.batch_size):
                results[name][f"with long n={n}"] = trial(srv, n, args.long_tokens)
            if name == "continuous batching":
                results[name]["client leaves"] = cancelled_on_leave(srv)
    print(json.dumps({"model": args.model, "batch_size": args.batch_size, "long_tokens": args.long_tokens,
                      **results}, indent=1))


if __name__ == "__main__":
    main()
