"""PRM training settings, compared on the same labels: which settings give a PRM that ranks held-out steps?

Takes a finished ``prm`` stage directory (``labels/steps.jsonl``: the training questions' labelled replies;
``quality/steps.jsonl``: held-out questions labelled the same way), trains one value-head PRM per ``--config``
on the training labels (LoRA on the policy's backbone when ``--policy-adapter`` is given), scores the held-out
steps with each, and prints the step AUC and accuracy next to a constant scorer. Each config trains in its own
output directory under ``--out`` (a rerun with the same config and labels reuses it).

    python bench/prm_settings.py --prm-dir runs/efficacy-multistep/multistep/seed0/sft_rl_prm/multistep/prm \\
        --policy-adapter runs/efficacy-multistep/multistep/seed0/sft_rl_prm/multistep/sft/adapter \\
        --config '{"epochs": 3, "learning_rate": 3e-4, "lora_rank": 8}' \\
        --config '{"epochs": 8, "learning_rate": 1e-3, "lora_rank": 16, "lora_alpha": 32}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(prm_dir: Path, configs: list[dict], out: Path, model: str, policy_adapter: str | None) -> list[dict]:
    from openrft.rewards.labels import FLAT_STEPS_FILE, read_step_examples
    from openrft.rewards.prm.loader import load_scorer
    from openrft.rewards.prm.quality import QUALITY_DIR, step_quality
    from openrft.rewards.prm.train import PRMTrainConfig, run_prm_train

    train_labels = prm_dir / "labels" / FLAT_STEPS_FILE
    held = read_step_examples(prm_dir / QUALITY_DIR / FLAT_STEPS_FILE)
    labels = [list(e.labels) for e in held]
    rows = [{"config": "constant 0.5", **_pick(step_quality([[0.5] * len(y) for y in labels], labels))}]
    for i, settings in enumerate(configs):
        config = PRMTrainConfig(labels=[str(train_labels)], model=model, init_adapter=policy_adapter, held_out=0.0,
                                **settings)
        t0 = time.perf_counter()
        result = run_prm_train(config, out / f"config{i}", show_progress=False)
        seconds = time.perf_counter() - t0
        scorer = load_scorer(str(result.checkpoint_dir))
        scores = scorer.score_batch([e.question for e in held], [list(e.steps) for e in held])
        scorer.close()
        rows.append({"config": json.dumps(settings), "train_seconds": round(seconds, 1),
                     "reused": result.skipped, **_pick(step_quality(scores, labels))})
    return rows


def _pick(q: dict) -> dict:
    return {k: q.get(k) for k in ("steps", "auc", "accuracy", "mean_score_good", "mean_score_bad")}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm-dir", required=True, help="a finished prm stage directory with quality/ labels")
    ap.add_argument("--config", action="append", required=True,
                    help="JSON object of PRM training settings (openrft prm train --help); repeat to compare")
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
    rows = run(Path(args.prm_dir), configs, Path(args.out), args.model, args.policy_adapter)
    print(f"\n{'settings':<72} {'steps':>6} {'AUC':>6} {'acc':>6} {'train s':>8}")
    for r in rows:
        auc = f"{r['auc']:.3f}" if r["auc"] is not None else "-"
        print(f"{r['config']:<72} {r['steps']:>6} {auc:>6} {r['accuracy']:>6.3f} {r.get('train_seconds', 0):>8}")
    return rows


if __name__ == "__main__":
    main()
