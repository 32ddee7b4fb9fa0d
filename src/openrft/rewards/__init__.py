"""Rewards: the task's outcome grader, process scorers (PRMs), user functions, and their combination.

:class:`CompositeReward` (built from a :class:`RewardSettings` by :func:`build_reward`) is the
one reward the RL stage calls; it returns a :class:`RewardBatch` with every part for logging.
PRM scorers live in :mod:`openrft.rewards.prm` (loaded lazily; they import torch).
"""

from openrft.rewards.base import CompositeReward, RewardBatch, RewardSettings, build_reward, check_probabilities
from openrft.rewards.combine import AGGREGATORS, aggregate_steps, combine
from openrft.rewards.functions import (
    FunctionValues,
    RewardFunction,
    RewardFunctionError,
    call_reward_function,
    load_reward_function,
    sample_columns,
)
from openrft.rewards.outcome import OutcomeGrades, OutcomeReward
from openrft.rewards.prm.base import PRMFormatError, ProcessScorer
from openrft.rewards.steps import STEP_RULES, Step, split_steps

__all__ = [
    "AGGREGATORS",
    "STEP_RULES",
    "CompositeReward",
    "FunctionValues",
    "OutcomeGrades",
    "OutcomeReward",
    "PRMFormatError",
    "ProcessScorer",
    "RewardBatch",
    "RewardSettings",
    "RewardFunction",
    "RewardFunctionError",
    "Step",
    "aggregate_steps",
    "build_reward",
    "call_reward_function",
    "check_probabilities",
    "combine",
    "load_reward_function",
    "sample_columns",
    "split_steps",
]
