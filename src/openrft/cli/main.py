"""``openrft <subcommand>``: one console command, thin subcommand modules imported on demand."""

from __future__ import annotations

import importlib
import logging
import sys

SUBCOMMANDS = {
    "eval": ("openrft.cli.eval", "evaluate a model on a dataset: accuracy over sampled runs, maj@k, pass@k"),
    "data": ("openrft.cli.data", "list bundled datasets; check a dataset for train/test leakage and duplicates"),
    "augment": ("openrft.cli.augment", "rewrite questions into meaning-preserving variants and shuffle options"),
    "synthesize": ("openrft.cli.synthesize", "sample reasoning traces until they reach the gold answer"),
    "sft": ("openrft.cli.sft", "supervised warm-up on synthesized traces (LoRA by default)"),
    "rl": ("openrft.cli.rl", "reinforcement fine-tuning: PPO (gae) or critic-free (grpo, rloo, reinforce_pp) with outcome and process rewards"),
    "prm": ("openrft.cli.prm", "process reward models: 'prm train' on step labels (given or estimated from rollouts)"),
    "orm": ("openrft.cli.orm", "outcome reward models: 'orm train' a correctness classifier for reranking"),
    "run": ("openrft.cli.run", "run a recipe end to end (augment, synthesize, sft, rl, eval) in runs/<name>/, resuming"),
    "report": ("openrft.cli.report", "write report.md/report.html with tables and plots for a run directory"),
    "compare": ("openrft.cli.compare", "method x task accuracy table over finished run directories"),
    "export": ("openrft.cli.export", "export prompts and openrft's reward for verl or OpenRLHF (cluster-scale RL)"),
    "serve": ("openrft.serve", "serve a local model through an OpenAI-compatible HTTP API"),
}
# subcommands that train or generate: their processes keep freed memory (openrft.models.allocator)
COMPUTE = frozenset({"eval", "augment", "synthesize", "sft", "rl", "prm", "orm", "run", "serve"})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: openrft <subcommand> [options]\n\nsubcommands:")
        for name, (_, help_) in SUBCOMMANDS.items():
            print(f"  {name:<10} {help_}")
        print("\n'openrft <subcommand> --help' lists the options of each.")
        return 0
    if argv[0] in ("-V", "--version"):
        from openrft import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(name, SUBCOMMANDS, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        print(f"openrft: unknown subcommand {name!r}{hint} (valid: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if name in COMPUTE and not any(a in ("-h", "--help") for a in rest):
        from openrft.models.allocator import keep_freed_memory

        keep_freed_memory()
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
