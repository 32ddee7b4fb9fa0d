"""What an exported reward module runs on the cluster: openrft's own grader (and PRM), behind verl's and OpenRLHF's signatures.

The module that ``openrft export`` writes holds only its settings (``CONFIG``) and thin entry
points; the scoring is this file, copied with the graders it needs into the export folder
(:mod:`openrft.export.bundle`), so the cluster grades with exactly the code ``openrft eval`` uses and
needs nothing installed: this file and everything it imports use the standard library only (the
OpenRLHF entry point returns torch tensors, imported from the engine's own environment).

Each exported row carries its :class:`~openrft.data.sample.Sample` as JSON (verl: in
``extra_info["openrft_sample"]``; OpenRLHF: as the label), so the grader sees the full record
(choices, answer type, tolerances' inputs), not just a gold string.

>>> split_response("<|im_start|>user\\n2+3?<|im_end|>\\n<|im_start|>assistant\\n", "<|endoftext|><|im_start|>user\\n2+3?"
...                "<|im_end|>\\n<|im_start|>assistant\\nSo 5.<|im_end|><|endoftext|>")
'So 5.'
>>> r = ExportedReward({"format_version": 1})
>>> s = Sample(id="q", task="t", question="2+3?", answer="5", answer_type="numeric")
>>> [row["score"] for row in r.score([s, s, s], ["So 5.", "So 6.", "no idea"])]
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from openrft.data.sample import DataError, Sample

__all__ = ["FORMAT_VERSION", "PRM_URL_ENV", "SAMPLE_KEY", "ExportedReward", "decode_sample", "encode_sample",
           "shared_reward", "split_response"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAMPLE_KEY = "openrft_sample"  # verl: extra_info key holding the sample JSON
PRM_URL_ENV = "OPENRFT_PRM_URL"  # overrides the exported PRM URL on the cluster

# special tokens a decoder may leave at the end of a query (OpenRLHF decodes with skip_special_tokens=False)
_SPECIAL = r"(?:<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|</s>|<eos>|<pad>|<end_of_turn>)"
_TRAILING_SPECIAL = re.compile(rf"{_SPECIAL}(?:\s*{_SPECIAL})*\s*$")
_TAIL_CHARS = 64


def encode_sample(sample: Sample) -> str:
    """The sample as one JSON string (lossless for JSON-serialisable ``meta``)."""
    return json.dumps(sample.to_dict(), ensure_ascii=False, sort_keys=True)


@functools.lru_cache(maxsize=8192)
def _decode(text: str) -> Sample:
    return Sample.from_dict(json.loads(text))


def decode_sample(value: Any, where: str = "label") -> Sample:
    """A :class:`Sample` from its JSON string (or the already parsed dict); ``DataError`` naming ``where`` otherwise."""
    try:
        if isinstance(value, Mapping):
            return Sample.from_dict(dict(value))
        if isinstance(value, (str, bytes)):
            return _decode(value.decode() if isinstance(value, bytes) else value)
    except (ValueError, TypeError) as err:  # JSONDecodeError and DataError are ValueErrors
        raise DataError(f"{where} is not an openrft sample: {err}") from None
    raise DataError(f"{where} is a {type(value).__name__}, expected the sample JSON that 'openrft export' wrote; "
                    "score only rows exported by openrft with this reward module")


def split_response(prompt: str, query: str) -> str:
    """The response part of an OpenRLHF ``query`` (prompt + response, decoded with special tokens).

    The prompt is found in the query (left padding may precede it); failing that (a prompt
    truncated on the left, or a tokenizer round trip that changed it), its last characters are.
    Special tokens at the end (EOS, padding) are removed.
    """
    start = query.find(prompt) if prompt else -1
    if start >= 0:
        response = query[start + len(prompt):]
    else:
        tail = prompt[-_TAIL_CHARS:].lstrip()
        at = query.find(tail) if tail else -1
        if at < 0:
            logger.warning("prompt not found in the query; grading the whole query as the response")
            response = query
        else:
            response = query[at + len(tail):]
    return _TRAILING_SPECIAL.sub("", response)


class ExportedReward:
    """openrft's reward with settings fixed at export time.

    ``config`` keys: ``format_version``, ``alpha``, ``agg``, ``step_rule``, ``partial_credit``,
    ``score_answer_step`` (default true), ``prm_url`` (None: outcome only; scored through
    :class:`~openrft.export.prm_client.PRMClient`), ``scores_only`` (return bare numbers, no parts),
    ``openrft_version`` (the exporting version; a different grading code is warned about).
    :envvar:`OPENRFT_PRM_URL` replaces ``prm_url``.
    """

    def __init__(self, config: Mapping[str, Any]):
        cfg = self._cfg = dict(config)
        version = cfg.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"exported reward format {version!r}, this openrft reads {FORMAT_VERSION}; "
                             "re-export with the installed openrft or install the exporting version")
        from openrft import __version__

        exported = cfg.get("openrft_version")
        if exported and exported != __version__:
            logger.warning("reward exported by openrft %s, scoring with the code of %s: grades may differ", exported,
                           __version__)
        url = cfg.get("prm_url")
        env = os.environ.get(PRM_URL_ENV, "").strip()
        if env and url:
            url = env
        elif env:
            logger.warning("%s is set but this export has no PRM (outcome only); ignoring it", PRM_URL_ENV)
        from openrft.rewards.base import RewardSettings

        self.config = RewardSettings(alpha=cfg.get("alpha", 0.7), agg=cfg.get("agg", "mean"),
                                     step_rule=cfg.get("step_rule", "newline"),
                                     partial_credit=cfg.get("partial_credit", 0.0),
                                     score_answer_step=cfg.get("score_answer_step", True), prm=url)
        self.scores_only = bool(cfg.get("scores_only", False))
        self._reward = None
        self._lock = threading.Lock()

    def __reduce__(self):
        # a pickled reward (sent to another process) carries its settings, not the lock or a built reward: the
        # receiver rebuilds it on first use (and reads its own environment)
        return (type(self), (self._cfg,))

    def __repr__(self) -> str:
        return f"ExportedReward(prm={self.config.prm!r}, alpha={self.config.alpha}, agg={self.config.agg!r})"

    @property
    def reward(self):
        """The :class:`~openrft.rewards.base.CompositeReward`, built on first use."""
        with self._lock:
            if self._reward is None:
                from openrft.export.prm_client import PRMClient
                from openrft.rewards.base import CompositeReward

                prm = self.config.prm
                self._reward = CompositeReward(self.config, scorer=PRMClient(prm) if prm else None)
            return self._reward

    def score(self, samples: Sequence[Sample], completions: Sequence[str]) -> list[dict[str, float]]:
        """Per completion: ``score`` (the reward) and every part (``outcome``, ``correct``, ``acc``, ``has_answer``;
        with a PRM also ``process``, ``n_steps``, ``no_steps``), all floats; the same keys for every row."""
        completions = ["" if c is None else str(c) for c in completions]
        batch = self.reward(list(samples), completions)
        rows = []
        for i, total in enumerate(batch.rewards):
            row = {"score": float(total)}
            row.update({name: float(values[i]) for name, values in batch.parts.items()})
            row["acc"] = row["correct"]
            rows.append(row)
        return rows

    # ---- verl ---------------------------------------------------------------------------------
    def verl_sample(self, extra_info: Any, data_source: Any = None) -> Sample:
        if not isinstance(extra_info, Mapping) or SAMPLE_KEY not in extra_info:
            raise DataError(f"row of data_source {data_source!r} has no extra_info[{SAMPLE_KEY!r}]; this reward "
                            "scores the parquet files written by 'openrft export verl' (mix other data through "
                            "its own reward function)")
        return decode_sample(extra_info[SAMPLE_KEY], f"extra_info[{SAMPLE_KEY!r}] of data_source {data_source!r}")

    def verl_score(self, data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None,
                   **_: Any) -> dict[str, float] | float:
        """verl's ``compute_score``: a dict with ``score`` and the parts, or a float when ``scores_only``."""
        row = self.score([self.verl_sample(extra_info, data_source)], [solution_str])[0]
        return row["score"] if self.scores_only else row

    def verl_score_batch(self, data_sources: Sequence[Any], solution_strs: Sequence[str],
                         ground_truths: Sequence[Any], extra_infos: Sequence[Any] | None = None,
                         **_: Any) -> list[dict[str, float]] | list[float]:
        """verl's batch reward manager signature: one openrft call (one PRM request) per batch."""
        extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
        samples = [self.verl_sample(e, d) for e, d in zip(extra_infos, data_sources)]
        rows = self.score(samples, solution_strs)
        return [r["score"] for r in rows] if self.scores_only else rows

    # ---- OpenRLHF -----------------------------------------------------------------------------
    def openrlhf_rewards(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any):
        """OpenRLHF's ``reward_func``: ``{"rewards", "scores", "extra_logs"}`` tensors (``scores``: 0/1 correctness,
        for ``--dynamic_filtering``), or the bare rewards tensor when ``scores_only``."""
        import torch

        if not len(queries) == len(prompts) == len(labels):
            raise ValueError(f"{len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels: need one each")
        samples = [decode_sample(lab, f"label {i}") for i, lab in enumerate(labels)]
        responses = [split_response(p, q) for p, q in zip(prompts, queries)]
        rows = self.score(samples, responses)
        rewards = torch.tensor([r["score"] for r in rows], dtype=torch.float32)
        if self.scores_only:
            return rewards
        parts = [k for k in (rows[0] if rows else {}) if k not in ("score", "acc")]
        return {
            "rewards": rewards,
            "scores": torch.tensor([r["correct"] for r in rows], dtype=torch.float32),
            "extra_logs": {k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in parts},
        }


_SHARED: dict[str, ExportedReward] = {}
_SHARED_LOCK = threading.Lock()


def shared_reward(config: Mapping[str, Any]) -> ExportedReward:
    """One :class:`ExportedReward` per distinct ``config`` in this process: what the exported module's entry points
    call, so a function the engine pickled to a worker builds its reward there once, on first use."""
    key = json.dumps(dict(config), sort_keys=True, default=str)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = ExportedReward(config)
        return _SHARED[key]
