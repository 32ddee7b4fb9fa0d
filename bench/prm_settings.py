"""PRM training settings, compared on the same labels: which settings give a PRM that ranks held-out steps?

Takes a finished ``prm`` stage directory (``labels/steps.jsonl``: the training questions' labelled replies;
``quality/steps.jsonl``: held-out questions labelled the same way), trains one value-head PRM per ``--config``
on the training labels (LoRA on the policy's backbone when ``--policy-adapter`` is given), scores the held-out
steps with each, and prints the step AUC and accuracy next to a constant scorer. Each config trains in its own
output directory under ``--out`` (a rerun with the same config and labels reuses it). A config's
``"extra_labels": [paths]`` adds labelled replies to its training set (e.g. another labelling of the same
training questions), to see whether more labels would pay; ``"labels": [paths]`` trains on those instead of the
stage's own labels (e.g. a labelling of more replies per question by ``openrft prm train --auto-label``);
``"reply_continuations": true`` trains on the labels with each reply's own continuation counted as one more
rollout of its step prefixes (the labelling option of that name, applied to the finished labels). A config trains
on every training question unless it sets ``"held_out"`` (the stage holds out 10%: ``"held_out": 0.1`` with the
stage's seed and settings retrains the stage's own PRM, a baseline for a changed setting).
``--checkpoint`` scores finished PRMs (the stage's own ``checkpoint/``) without training. It first prints how
many step-prefix rollouts the stage's labellings needed with and without shared prefixes (with no
``--config``/``--checkpoint``, only that). With ``--data`` (the task of the held-out questions), each PRM also
picks among the held-out questions' replies
(``quality/completions.jsonl``): best-of-k (rerank@k) and PRM-weighted voting (wmaj@k) against maj@k, k = 4
and 8, with a reply scored by its lowest, last or mean step score, and the reply AUC pooled and within a question.

    python bench/prm_settings.py --prm-dir runs/efficacy-multistep/multistep/seed0/sft_rl_prm/multistep/prm \\
        --policy-adapter runs/efficacy-multistep/multistep/seed0/sft_rl_prm/multistep/sft/adapter \\
        --config '{"epochs": 3, "learning_rate": 3e-4, "lora_rank": 8}' \\
        --config '{"epochs": 8, "learning_rate": 1e-3, "lora_rank": 16, "lora_alpha": 32}'
    python bench/prm_settings.py --prm-dir ... --data multistep \
        --checkpoint runs/efficacy-multistep/multistep/seed0/sft_rl_prm/multistep/prm/checkpoint
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


AGGS = ("min", "last", "mean")


def run(prm_dir: Path, configs: list[dict], out: Path, model: str, policy_adapter: str | None,
        checkpoints: list[str] = (), data: str | None = None) -> list[dict]:
    from openrft.reward_models.labels import FLAT_STEPS_FILE, read_step_examples
    from openrft.reward_models.quality import QUALITY_DIR, step_quality
    from openrft.reward_models.prm_train import PRMTrainConfig, run_prm_train

    train_labels = prm_dir / "labels" / FLAT_STEPS_FILE
    held = read_step_examples(prm_dir / QUALITY_DIR / FLAT_STEPS_FILE)
    labels = [list(e.labels) for e in held]
    replies = held_out_replies_of(prm_dir / QUALITY_DIR, data) if data else None
    rows = [{"config": "constant 0.5", **_pick(step_quality([[0.5] * len(y) for y in labels], labels))}]
    for path in checkpoints:
        rows.append({"config": f"checkpoint {path}", **_measure(path, held, labels, replies)})
    for i, settings in enumerate(configs):
        settings = dict(settings)
        extra = [str(x) for x in settings.pop("extra_labels", [])]
        own = [str(x) for x in settings.pop("labels", [train_labels])]
        paths = [*own, *extra]
        continuations = settings.pop("reply_continuations", False)
        if continuations:
            paths = _with_reply_continuations(paths, out / f"config{i}-labels")
        # no held-out questions unless the config asks (the stage holds out 10%: "held_out": 0.1 retrains its PRM)
        config = PRMTrainConfig(**{"labels": paths, "model": model, "init_adapter": policy_adapter,
                                   "held_out": 0.0} | settings)
        t0 = time.perf_counter()
        result = run_prm_train(config, out / f"config{i}", show_progress=False)
        seconds = time.perf_counter() - t0
        shown = settings | ({"extra_labels": len(extra)} if extra else {}) | (
            {"labels": own} if own != [str(train_labels)] else {}) | (
            {"reply_continuations": True} if continuations else {})
        rows.append({"config": json.dumps(shown),
                     "train_seconds": round(seconds, 1), "train_steps": sum(len(e.steps) for e in
                                                                            read_step_examples(config.labels)),
                     "reused": result.skipped, **_measure(str(result.checkpoint_dir), held, labels, replies)})
    return rows


def _with_reply_continuations(paths: list[str], out: Path) -> list[str]:
    """Copies of the label files with each reply's own continuation counted as one more rollout of its prefixes
    (:func:`~openrft.reward_models.labels.count_reply_continuations`). Each file is one labelling; whether it
    shared prefixes is read from the ``manifest.json`` beside it (a labelling from before the option: not)."""
    from openrft.reward_models.labels import count_reply_continuations, read_step_examples, write_step_examples
    from openrft.reward_models.prm_train import StepLabelSettings

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for j, path in enumerate(paths):
        manifest = Path(path).parent / "manifest.json"
        shared = json.loads(manifest.read_text())["config"].get(
            "share_prefixes", StepLabelSettings.LEGACY["share_prefixes"]) if manifest.exists() else True
        examples = count_reply_continuations(read_step_examples(path), shared_prefixes=shared)
        written.append(str(write_step_examples(out / f"labels{j}.jsonl", examples)))
    return written


def held_out_replies_of(quality_dir: Path, data: str):
    """The held-out questions' replies (``completions.jsonl``), split into steps and graded against ``data``."""
    from openrft.core.rundir import JsonlStore
    from openrft.data.loaders import load_sources
    from openrft.reward_models.labels import COMPLETIONS_FILE
    from openrft.reward_models.quality import held_out_replies

    completions = JsonlStore(quality_dir / COMPLETIONS_FILE).load()
    samples = [s for s in load_sources([data], split="test") if s.id in completions]
    if len(samples) != len(completions):
        raise SystemExit(f"--data {data}: {len(completions) - len(samples)} of the held-out questions in "
                         f"{quality_dir / COMPLETIONS_FILE} are not in its test split")
    return held_out_replies(samples, [completions[s.id]["texts"] for s in samples])


def _measure(checkpoint: str, held, labels, replies) -> dict:
    from openrft.reward_models.quality import best_of_k_quality, reply_quality, score_replies, step_quality
    from openrft.rewards.prm.loader import load_scorer

    scorer = load_scorer(checkpoint)
    try:
        out = _pick(step_quality(scorer.score_batch([e.question for e in held], [list(e.steps) for e in held]),
                                 labels))
        if replies is not None:
            per_question = score_replies(scorer, replies)
            ks = [k for k in (4, 8) if k <= min(len(r) for r in replies.correct)]
            for agg in AGGS:  # a reply's score from its step scores: Math-Shepherd's min, the last step, the mean
                replies_q = reply_quality(per_question, replies.correct, agg)
                out |= {f"{agg}:reply_auc": replies_q["auc"], f"{agg}:reply_auc_in_question":
                        replies_q["within_question_auc"]}
                bok = best_of_k_quality(per_question, replies.correct, replies.answers, ks, agg=agg)["k"]
                for k, m in bok.items():
                    out |= {f"{agg}:rerank@{k}": m["rerank"], f"{agg}:wmaj@{k}": m["weighted_maj"]}
                    out[f"maj@{k}"] = m["maj"]
    finally:
        scorer.close()
    return out


def _pick(q: dict) -> dict:
    return {k: q.get(k) for k in ("steps", "auc", "accuracy", "mean_score_good", "mean_score_bad")}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm-dir", required=True, help="a finished prm stage directory with quality/ labels")
    ap.add_argument("--config", action="append", default=[],
                    help="JSON object of PRM training settings (openrft prm train --help); repeat to compare")
    ap.add_argument("--checkpoint", action="append", default=[], help="also score this finished PRM (repeatable)")
    ap.add_argument("--data", default=None, help="the held-out questions' task (bundled name or file): adds "
                                                "best-of-k and PRM-weighted voting on their replies")
    ap.add_argument("--policy-adapter", default=None, help="the policy's SFT adapter (the PRM's backbone)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="runs/prm-settings")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    from openrft.models.allocator import keep_freed_memory

    keep_freed_memory()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    configs = [json.loads(c) for c in args.config]
    for name, n in prefix_sharing(Path(args.prm_dir)).items():
        print(f"{name} labelling: {n['alone']} step prefixes rolled out one reply at a time, {n['shared']} when "
              f"the replies to a question share theirs ({1 - n['shared'] / max(n['alone'], 1):.0%} fewer rollouts)")
    if not configs and not args.checkpoint:
        return []  # the labellings' prefix counts only
    rows = run(Path(args.prm_dir), configs, Path(args.out), args.model, args.policy_adapter, args.checkpoint,
               args.data)
    print(f"\n{'settings':<72} {'steps':>6} {'AUC':>6} {'acc':>6} {'train s':>8}")
    for r in rows:
        print(f"{r['config'][-72:]:<72} {r['steps']:>6} {_f(r['auc']):>6} {_f(r['accuracy']):>6} "
              f"{r.get('train_seconds', 0):>8}")
    ks = sorted({k.split("@")[1] for r in rows for k in r if k.startswith("maj@")}, key=int)
    if ks:
        majs = ", ".join(f"maj@{k} {_f(rows[-1]['maj@' + k])}" for k in ks)
        print(f"\nbest-of-k on the held-out replies ({majs}):")
        print(f"{'settings':<64} {'agg':>5}" + "".join(f" {w + '@' + k:>9}" for k in ks for w in ("rerank", "wmaj"))
              + f" {'reply AUC':>9} {'in a question':>13}")
        for r in rows[1:]:
            for agg in AGGS:
                print(f"{r['config'][-64:]:<64} {agg:>5}"
                      + "".join(f" {_f(r.get(f'{agg}:{w}@{k}')):>9}" for k in ks for w in ("rerank", "wmaj"))
                      + f" {_f(r.get(f'{agg}:reply_auc')):>9} {_f(r.get(f'{agg}:reply_auc_in_question')):>13}")
    return rows


def prefix_sharing(prm_dir: Path) -> dict[str, dict[str, int]]:
    """For the training and held-out labellings of ``prm_dir``: the step prefixes rolled out when each reply's
    prefixes go alone, and when a prefix that several replies to one question share goes once (the labelling's
    ``share_prefixes``). Rollouts per prefix are the same either way, so the ratio is that of the decoding."""
    from openrft.reward_models.labels import FLAT_STEPS_FILE, read_step_examples
    from openrft.reward_models.quality import QUALITY_DIR

    out = {}
    for name, path in (("training", prm_dir / "labels" / FLAT_STEPS_FILE),
                       ("held-out", prm_dir / QUALITY_DIR / FLAT_STEPS_FILE)):
        if not path.is_file():
            continue
        alone, shared = 0, set()
        for e in read_step_examples(path):
            for k in range(len(e.steps) - 1):  # the last step's label is the reply's own grade: no rollouts
                alone += 1
                shared.add((e.meta.get("sample_id"), "\n".join(e.steps[:k + 1])))
        out[name] = {"alone": alone, "shared": len(shared)}
    return out


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


if __name__ == "__main__":
    main()
