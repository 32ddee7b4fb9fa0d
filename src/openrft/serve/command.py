"""``openrft serve``: flags, and serving a model until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from openrft.serve.protocol import Limits
from openrft.serve.server import OpenAIServer, make_server

API_KEY_ENV = "OPENRFT_API_KEY"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="openrft serve",
        description="Serve a model through an OpenAI-compatible HTTP API: /v1/chat/completions and /v1/completions "
                    "(streaming, logprobs), /v1/models, /health.")
    parser.add_argument("--model", default="smollm2-135m",
                        help="local checkpoint directory, hub id (offline: from the local cache) or bundled name")
    parser.add_argument("--served-model-name", default=None, help="name clients send as 'model' (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${API_KEY_ENV}; none: open)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="most sequences the model decodes at once, shared by all requests")
    parser.add_argument("--default-max-tokens", type=int, default=512,
                        help="max_tokens for requests that do not set it")
    for f in dataclasses.fields(Limits):
        parser.add_argument(f.metadata["flag"], dest=f.name, type=int, default=f.default,
                            help=f"{f.metadata['help']} (default: {f.default})")
    return parser


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def server_from_args(args: argparse.Namespace) -> OpenAIServer:
    """Load the model named by parsed ``args`` and bind the server (not yet serving)."""
    from openrft.models.backends.hf import TransformersGenerator

    limits = limits_from_args(args)
    generator = TransformersGenerator.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                                      batch_size=args.batch_size)
    return make_server(generator, args.served_model_name or args.model, host=args.host, port=args.port,
                       api_key=args.api_key, default_max_tokens=args.default_max_tokens, limits=limits)


def main(argv: Sequence[str] | None = None) -> int:
    """``openrft serve --model PATH_OR_NAME --port 8000``: serve a model until Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        limits_from_args(args)
        if args.batch_size < 1 or args.default_max_tokens < 1:
            raise ValueError("--batch-size and --default-max-tokens must be at least 1")
    except ValueError as err:  # before any model loads
        print(f"openrft serve: {err}", file=sys.stderr)
        return 2
    try:
        server = server_from_args(args)
    except FileNotFoundError as err:
        print(f"openrft serve: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # port in use, permission denied
        print(f"openrft serve: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    auth = "Bearer key required" if args.api_key else "no API key"
    print(f"openrft serve: {server.model_name!r} at {server.url}/v1 ({auth}; Ctrl-C stops)", flush=True)
    server.serve_forever()
    return 0
