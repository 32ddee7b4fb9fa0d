"""Rejection-sampled warm-up traces (OpenRFT 2.2.1, ReFT warm-up): sample until correct, else fall back.

>>> from openrft.synthesize import SynthesizeConfig
>>> SynthesizeConfig(budget=20, rounds=(4, 8)).settings.sizes
[4, 8, 8]
"""

from openrft.synthesize.sampler import (
    FALLBACK_MODES, LoopSettings, QuestionState, finalize, round_seed, round_sizes, sample_round,
)
from openrft.synthesize.stage import (
    OPEN_STATE, STAGE, TRACES, SynthesizeConfig, SynthesizeResult, build_generator, load_traces, run_synthesize,
    synthesis_stats, task_summary,
)

__all__ = [
    "FALLBACK_MODES",
    "LoopSettings",
    "OPEN_STATE",
    "QuestionState",
    "STAGE",
    "SynthesizeConfig",
    "SynthesizeResult",
    "TRACES",
    "build_generator",
    "finalize",
    "load_traces",
    "round_seed",
    "round_sizes",
    "run_synthesize",
    "sample_round",
    "synthesis_stats",
    "task_summary",
]
