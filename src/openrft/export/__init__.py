"""Export data, rewards and the RL launch for cluster RL engines: verl (parquet + ``compute_score`` + hydra overrides)
and OpenRLHF (JSONL + ``reward_func`` + ``train_ppo_ray`` flags).

The exported reward modules grade with the task's own grader (plus, when exported with a PRM URL,
``alpha * outcome + (1 - alpha) * f(step scores)`` from a remote process scorer), so a cluster run is rewarded
exactly as ``openrft rl`` and ``openrft eval`` are; the grading code travels in the export folder
(:mod:`openrft.export.bundle`) and needs only Python's standard library. The launch script carries a recipe's RL
settings (:mod:`openrft.export.launch`).

>>> from openrft.export import ExportConfig, export_verl        # doctest: +SKIP
>>> print(export_verl(ExportConfig(data=["arithmetic"]), "exports/arith"))  # doctest: +SKIP
"""

from openrft.export.common import ExportConfig, ExportError, ExportResult
from openrft.export.openrlhf import export_openrlhf
from openrft.export.runtime import ExportedReward, decode_sample, encode_sample, split_response
from openrft.export.verl import export_verl

ENGINES = {"verl": export_verl, "openrlhf": export_openrlhf}

__all__ = ["ENGINES", "ExportConfig", "ExportError", "ExportResult", "ExportedReward", "decode_sample",
           "encode_sample", "export_openrlhf", "export_verl", "split_response"]
