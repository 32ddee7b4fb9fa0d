"""``openrft export verl``: prompts as verl's RL parquet files and openrft's reward as a verl custom reward function.

Rows follow verl's data preparation guide (docs/preparation/prepare_data.rst): ``data_source``
(the openrft task, so verl's validation metrics come per task), ``prompt`` (chat messages that
verl's ``RLHFDataset`` renders with the model's chat template), ``ability`` (the answer type),
``reward_model = {"style": "rule", "ground_truth": <gold answer>}`` and ``extra_info`` with
``index``, ``split``, ``id`` and ``openrft_sample`` (the :class:`Sample` as JSON, so the reward
rebuilds it losslessly).

The reward module has ``compute_score(data_source, solution_str, ground_truth, extra_info=None,
**kwargs)`` (verl's naive reward manager) and ``compute_score_batch(data_sources, solution_strs,
ground_truths, extra_infos, **kwargs)`` (its batch manager); both return ``{"score": ..., parts}``
(verl logs every key) unless exported with ``scores_only``. Checked against verl 0.9.1
(``verl/experimental/reward_loop/reward_manager/naive.py``, ``verl/utils/dataset/rl_dataset.py``)
and the legacy ``verl/workers/reward_manager/{naive,batch}.py``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.common import (MANIFEST, ExportConfig, ExportResult, check_out_dir, load_splits,
                                   prompt_messages, reward_module_source, write_bytes, write_manifest, write_text)
from openrft.export.runtime import PRM_URL_ENV, SAMPLE_KEY, encode_sample

__all__ = ["FILES", "export_verl", "verl_rows", "verl_schema", "verl_usage"]

FILES = {"train": "train.parquet", "test": "test.parquet", "reward": "openrft_reward.py", "readme": "README.md"}

_ENTRY_POINTS = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl custom reward (naive/dapo reward managers): openrft's score of one response."""
    return REWARD.verl_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """verl custom reward for reward_manager=batch: one openrft call (one PRM request) per batch."""
    return REWARD.verl_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs)
'''

_DOC = """verl loads this file through custom_reward_function.path / .name (compute_score, or compute_score_batch
with the batch reward manager); the sample is rebuilt from extra_info["openrft_sample"]."""


def verl_schema():
    """The parquet schema: the five columns of verl's RL data, with fixed struct fields."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()), ("id", pa.string()),
                                  (SAMPLE_KEY, pa.string())])),
    ])


def verl_rows(samples: Sequence[Sample], messages: Sequence[list[dict[str, str]]], split: str) -> list[dict[str, Any]]:
    """One verl row per sample (``messages[i]`` is the prompt of ``samples[i]``)."""
    return [
        {
            "data_source": s.task,
            "prompt": list(msgs),
            "ability": s.answer_type,
            "reward_model": {"style": "rule", "ground_truth": s.answer},
            "extra_info": {"index": i, "split": split, "id": s.id, SAMPLE_KEY: encode_sample(s)},
        }
        for i, (s, msgs) in enumerate(zip(samples, messages, strict=True))
    ]


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=verl_schema()), buf)
    return buf.getvalue()


def verl_usage(out: Path, has_test: bool, prm_url: str | None, longest_prompt: int) -> str:
    """How to run verl on an export in ``out``: the exact settings that point verl at its files."""
    d = out.resolve()
    val = d / (FILES["test"] if has_test else FILES["train"])
    reward = d / FILES["reward"]
    from openrft import __version__

    lines = [
        f"verl export in {d}",
        "",
        "Train with verl (GRPO shown; any verl algorithm reads the same files):",
        "",
        "    python3 -m verl.trainer.main_ppo \\",
        "        algorithm.adv_estimator=grpo \\",
        f"        data.train_files={d / FILES['train']} \\",
        f"        data.val_files={val} \\",
        "        data.prompt_key=prompt \\",
        "        data.max_prompt_length=1024 data.max_response_length=1024 \\",
        "        actor_rollout_ref.model.path=<your model> \\",
        "        actor_rollout_ref.rollout.n=8 \\",
        f"        reward.custom_reward_function.path={reward} \\",
        "        reward.custom_reward_function.name=compute_score",
        "",
        "(verl 0.9 reads reward.custom_reward_function; releases before the `reward:` group read the top level:",
        f"    custom_reward_function.path={reward} custom_reward_function.name=compute_score)",
        "Releases with the legacy batch reward manager score a whole batch in one call (one PRM request):",
        "    custom_reward_function.name=compute_score_batch reward_model.reward_manager=batch",
        "(verl 0.9's reward loop has no batch manager; it runs compute_score on many responses concurrently.)",
        "",
        f"Longest prompt: {longest_prompt} characters; set data.max_prompt_length above its length in tokens.",
        f"Install openrft {__version__} on every node that scores (pip install openrft=={__version__}).",
    ]
    if not has_test:
        lines.append("No test split was exported: data.val_files points at the training prompts.")
    if prm_url:
        lines.append(f"The PRM at {prm_url} must be reachable from the scoring nodes; {PRM_URL_ENV}=<url> replaces it.")
    lines.append("Paths are this machine's: copy the folder to the cluster and adjust them.")
    return "\n".join(lines) + "\n"


def export_verl(config: ExportConfig, out: str | os.PathLike[str]) -> ExportResult:
    """Write ``train.parquet`` (and ``test.parquet``), ``openrft_reward.py``, ``README.md`` and the manifest to ``out``."""
    out_dir = check_out_dir(out, config.overwrite)
    splits = load_splits(config)
    messages = prompt_messages(splits, config.icl_k)
    out_dir.mkdir(parents=True, exist_ok=True)
    split_names = {"train": config.split, "test": config.test_split}
    files: dict[str, Path] = {}
    for name, samples in splits.items():
        rows = verl_rows(samples, messages[name], split_names[name] or name)
        files[name] = write_bytes(out_dir / FILES[name], _parquet_bytes(rows))
    files["reward"] = write_text(out_dir / FILES["reward"],
                                 reward_module_source("verl", config.reward_config(), _DOC, _ENTRY_POINTS))
    longest = max(sum(len(m["content"]) for m in msgs) for rows in messages.values() for msgs in rows)
    usage = verl_usage(out_dir, "test" in splits, config.prm_url, longest)
    files["readme"] = write_text(out_dir / FILES["readme"], "# openrft export for verl\n\n```\n" + usage + "```\n")
    counts = {name: len(samples) for name, samples in splits.items()}
    write_manifest(out_dir, "verl", config, files, counts, stale=[*FILES.values()])
    files["manifest"] = out_dir / MANIFEST
    return ExportResult(out_dir, files, counts, usage)
