"""SFT warm-up stage: LoRA (or full) fine-tuning on synthesized traces, loss on the completion only.

Importing this package is cheap; trl, transformers and peft load when the stage runs.
"""

from openrft.sft.dataset import (
    LoadReport,
    SFTExample,
    build_dataset,
    load_sft_examples,
    to_rows,
    tokenize_prompt_completion,
)
from openrft.sft.stage import (
    SFTResult,
    SFTStageConfig,
    completion_loss,
    load_for_training,
    make_trainer,
    read_losses,
    run_sft,
)

__all__ = [
    "LoadReport",
    "SFTExample",
    "SFTResult",
    "SFTStageConfig",
    "build_dataset",
    "completion_loss",
    "load_for_training",
    "load_sft_examples",
    "make_trainer",
    "read_losses",
    "run_sft",
    "to_rows",
    "tokenize_prompt_completion",
]
