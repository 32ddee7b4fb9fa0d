"""Configuration of the RL stage: one dataclass, one help string per field.

Defaults are the CPU-sized version of the OpenRFT / ReFT settings; the paper values are in the
help strings (LoRA rank 4, actor lr 3e-5, critic lr 6e-5, KL 0.01, 1536 new tokens). The RL length is
``steps``, or ``epochs`` over the training questions (ReFT's 300), turned into steps by :meth:`RLConfig.resolved_steps`
once the trainer knows its samples.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from openrft.core.rundir import without_legacy_values
from openrft.core.tracking import parse_report_to
from openrft.models.backends.base import SamplingParams
from openrft.models.lora import LoraSettings
from openrft.rewards.base import RewardSettings
from openrft.rl.advantages import AdvantageSettings, get_estimator
from openrft.rl.losses import KL_KINDS, LOSS_AGG, get_policy_loss


#: RL steps when neither steps nor epochs is given
DEFAULT_STEPS = 20


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RLConfig:
    """Everything ``openrft rl`` needs. ``None`` means "the estimator's usual choice" where noted."""

    # ---- data / model -----------------------------------------------------------------------------
    data: list[str] = field(default_factory=list, metadata=_help(
        "training samples: bundled names (e.g. 'arithmetic', 'sciknoweval/chemical_calculation') or files"))
    split: str = field(default="train", metadata=_help("split of bundled datasets to train on"))
    limit: int | None = field(default=None, metadata=_help("keep the first N samples per task"))
    model: str = field(default="smollm2-135m", metadata=_help("base model: bundled name, local path or hub id"))
    adapter: str | None = field(default=None, metadata=_help(
        "start from this LoRA adapter (an 'openrft sft' output); it is merged into the base in memory, so the "
        "reference policy is the SFT model, and the RL adapter is saved stacked on it"))
    output_dir: str = field(default="runs/rl", metadata=_help("stage directory (adapter/, checkpoints/, metrics.jsonl)"))
    dtype: str = field(default="auto", metadata=_help("auto (fp32 on CPU, bf16 on CUDA) | float32 | bfloat16"))
    seed: int = field(default=0, metadata=_help("seed for data order, sampling and initialisation"))

    # ---- schedule -------------------------------------------------------------------------------
    steps: int | None = field(default=None, metadata=_help(
        f"RL steps (one rollout batch + its updates each); default {DEFAULT_STEPS} unless epochs is given"))
    epochs: int | None = field(default=None, metadata=_help(
        "RL length in passes over the training questions instead of steps (ReFT: 300): steps = "
        "ceil(epochs * questions / prompts_per_step), resolved once the training samples are known"))
    prompts_per_step: int = field(default=8, metadata=_help("distinct prompts sampled per step"))
    n_samples: int = field(default=4, metadata=_help("completions per prompt (a group for grpo/rloo)"))
    ppo_epochs: int = field(default=1, metadata=_help("passes over each rollout batch (ReFT: 2)"))
    minibatch_size: int | None = field(default=None, metadata=_help(
        "completions per optimizer step; default = the whole rollout batch (one update per epoch)"))
    micro_batch_size: int = field(default=8, metadata=_help("completions per forward/backward (gradient accumulation)"))

    # ---- sampling -------------------------------------------------------------------------------
    temperature: float = field(default=1.0, metadata=_help("rollout sampling temperature"))
    top_p: float = field(default=1.0, metadata=_help("rollout nucleus sampling"))
    max_new_tokens: int = field(default=256, metadata=_help("longest completion (OpenRFT: 1536)"))
    rollout_backend: str = field(default="transformers", metadata=_help(
        "transformers (the policy itself, continuous batching) | vllm (CUDA; LoRA adapter loaded per step)"))
    rollout_batch_size: int = field(default=32, metadata=_help("sequences decoded together by the transformers backend"))

    # ---- optimisation -----------------------------------------------------------------------------
    estimator: str = field(default="grpo", metadata=_help("advantage estimator: gae (PPO with a critic) | grpo | rloo | reinforce_pp"))
    lr: float = field(default=3e-5, metadata=_help("actor learning rate (OpenRFT: 3e-5)"))
    critic_lr: float = field(default=6e-5, metadata=_help("critic learning rate (OpenRFT: 6e-5)"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    warmup_steps: int = field(default=0, metadata=_help("linear learning-rate warm-up, in optimizer steps"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping (0 disables)"))
    policy_loss: str = field(default="ppo", metadata=_help(
        "policy loss: ppo (clipped surrogate, with clip-higher and dual clip) or 'package.module:function' "
        "registered like it (openrft.rl.losses.register_policy_loss)"))
    clip_low: float = field(default=0.2, metadata=_help("PPO ratio clip below 1"))
    clip_high: float | None = field(default=None, metadata=_help("PPO ratio clip above 1 (DAPO clip-higher: 0.28); default = clip_low"))
    dual_clip: float | None = field(default=None, metadata=_help("dual-clip constant c > 1 for negative advantages"))
    value_clip: float | None = field(default=0.2, metadata=_help("critic value clipping around the rollout values (None disables)"))
    loss_agg: str | None = field(default=None, metadata=_help(
        "token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm (Dr.GRPO); "
        "default token-mean (seq-mean-token-mean for grpo without dr_grpo)"))
    entropy_coef: float = field(default=0.0, metadata=_help("entropy bonus in the actor loss"))
    kl_coef: float = field(default=0.01, metadata=_help("KL coefficient to the reference policy (OpenRFT/ReFT: 0.01; 0 skips the reference pass)"))
    kl_estimator: str | None = field(default=None, metadata=_help("k1 | k2 | k3; default k1 in the reward, k3 in the loss"))
    kl_in: str | None = field(default=None, metadata=_help("'reward' (PPO/ReFT, reinforce_pp) or 'loss' (GRPO); default by estimator"))
    dr_grpo: bool = field(default=False, metadata=_help(
        "Dr.GRPO: no std normalisation of the group advantages (advantage.norm_by_std off) and token sums over a "
        "fixed length (loss_agg seq-mean-token-sum-norm unless given)"))
    advantage: AdvantageSettings = field(default_factory=AdvantageSettings, metadata=_help(
        "the advantage estimators' settings (gamma, lam, whiten, rpp_baseline, step_credit, norm_by_std, eps)"))

    # ---- models -----------------------------------------------------------------------------------
    lora_rank: int = field(default=4, metadata=_help("policy LoRA rank (OpenRFT: 4)"))
    lora_alpha: float = field(default=8.0, metadata=_help("LoRA alpha"))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout (0 keeps rollout and update policies identical)"))
    lora_targets: str = field(default="all-linear", metadata=_help("LoRA target modules (see 'openrft sft --help')"))
    critic: str = field(default="adapter", metadata=_help(
        "gae critic: 'adapter' (value head on a second LoRA adapter of the same base), 'shared' (a value head on "
        "the policy's own hidden states, one forward and one backward for both losses: ReFT's implementation) "
        "or a model path/name (a separate model with its own LoRA)"))
    vf_coef: float = field(default=5.0, metadata=_help(
        "weight of the value loss in the shared critic's loss (critic: shared; ReFT: 5)"))
    critic_warmup_steps: int = field(default=0, metadata=_help("steps that train only the critic at the start"))

    # ---- rewards ---------------------------------------------------------------------------------
    reward: RewardSettings = field(default_factory=RewardSettings, metadata=_help("outcome/process reward settings"))

    # ---- bookkeeping -------------------------------------------------------------------------------
    save_every: int = field(default=10, metadata=_help("checkpoint every N steps (and at the end)"))
    keep_checkpoints: int = field(default=2, metadata=_help("how many recent checkpoints to keep"))
    log_every: int = field(default=1, metadata=_help("console line every N steps"))
    tensorboard: bool = field(default=True, metadata=_help(
        "also log to TensorBoard when it is installed (when report_to is not given)"))
    report_to: list[str] | None = field(default=None, metadata=_help(
        "where metrics go besides metrics.jsonl, as trl's report_to: tensorboard, wandb, mlflow or none, "
        "comma-separated or repeated (default: TensorBoard as --tensorboard says); not part of the stage's identity"))
    threads: int | None = field(default=None, metadata=_help("torch CPU threads (default: torch's choice)"))
    share_prompts: bool = field(default=True, metadata=_help(
        "run each distinct prompt of a micro-batch once in the policy, reference and critic forwards (its KV cache "
        "expanded to the rows); off runs every row in full (same maths, slower); not part of the stage's identity"))
    skip_zero_advantage: bool = field(default=True, metadata=_help(
        "leave the rows whose advantages are all zero out of the update's forward and backward when they add "
        "nothing to the gradient (the ppo loss, no KL in the loss, no entropy bonus, no critic): the same update, "
        "faster when a group's samples all score alike (the step's policy statistics then cover the rows that "
        "ran); off runs every row; not part of the stage's identity"))
    rollout_states: bool = field(default=True, metadata=_help(
        "transformers rollouts: the last-layer states the rollout computed while sampling stand in for a no-grad "
        "forward of the policy over it (the same states up to float rounding): the rollout log-probs PPO's ratio "
        "and a KL in the reward need (ppo_epochs > 1, minibatches, kl_in: reward) come from the LM head on them, "
        "a shared critic's values from its value head; off runs that forward; not part of the stage's identity"))

    #: option values that reproduce RL from before the option existed (kept out of the stage's identity)
    LEGACY: ClassVar[dict[str, Any]] = {"policy_loss": "ppo", "reward.score_answer_step": True, "epochs": None,
                                        "vf_coef": 5.0, "advantage.norm_by_std": True, "advantage.eps": 1e-6}
    #: keys from before the advantage settings nested under ``advantage``, and where they went: old recipes and
    #: --config files still load (with a warning), and a stage's identity keeps the old names
    #: (:func:`rl_settings`), so a stage run before keeps it
    OLD_KEYS: ClassVar[dict[str, str]] = {
        "gamma": "advantage.gamma", "lam": "advantage.lam", "whiten_advantages": "advantage.whiten",
        "rpp_baseline": "advantage.rpp_baseline", "step_credit": "advantage.step_credit"}

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):
            self.reward = RewardSettings(**self.reward)
        if isinstance(self.advantage, dict):  # gamma, lam and step_credit are checked there
            self.advantage = AdvantageSettings(**self.advantage)
        if isinstance(self.data, str):
            self.data = [self.data]
        self.report_to = parse_report_to(self.report_to)
        get_estimator(self.estimator)  # a registry name or 'package.module:function', checked before any model loads
        get_policy_loss(self.policy_loss)
        if self.kl_estimator is not None and self.kl_estimator not in KL_KINDS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_KINDS)}, got {self.kl_estimator!r}")
        if self.loss_agg is not None and self.loss_agg not in LOSS_AGG:
            raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGG)}, got {self.loss_agg!r}")
        if self.kl_in not in (None, "reward", "loss"):
            raise ValueError(f"kl_in must be 'reward' or 'loss', got {self.kl_in!r}")
        self._check_length()
        for name in ("prompts_per_step", "n_samples", "ppo_epochs", "micro_batch_size", "max_new_tokens",
                     "rollout_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        SamplingParams(temperature=self.temperature, top_p=self.top_p)  # validates the rollout sampling
        if self.estimator in ("grpo", "rloo") and self.n_samples < 2:
            raise ValueError(f"{self.estimator} compares completions of the same prompt: n_samples must be >= 2")
        if self.vf_coef <= 0:
            raise ValueError(f"vf_coef must be > 0, got {self.vf_coef}")
        if self.minibatch_size is not None and self.minibatch_size < 1:
            raise ValueError(f"minibatch_size must be >= 1, got {self.minibatch_size}")
        if self.rollout_backend not in ("transformers", "vllm"):
            raise ValueError(f"rollout_backend must be 'transformers' or 'vllm', got {self.rollout_backend!r}")

    def _check_length(self) -> None:
        """``steps`` or ``epochs``, not both, each >= 1; neither means :data:`DEFAULT_STEPS` steps."""
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give the RL length as steps or as epochs, not both (got steps={self.steps}, "
                             f"epochs={self.epochs}; over a recipe's steps: --set rl.steps=null)")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.epochs is None and self.steps is None:
            self.steps = DEFAULT_STEPS  # what an RLConfig without either held before epochs existed

    # ---- resolved choices ------------------------------------------------------------------------
    def resolved_steps(self, questions: int) -> int:
        """RL steps over ``questions`` training questions: ``steps``, or enough steps of ``prompts_per_step``
        prompts for ``epochs`` passes (the last step may start the next pass).

        >>> RLConfig(epochs=300, prompts_per_step=32).resolved_steps(7473), RLConfig(steps=5).resolved_steps(7473)
        (70060, 5)
        """
        if self.epochs is None:
            assert self.steps is not None  # set in __post_init__
            return self.steps
        if questions < 1:
            raise ValueError("epochs need at least one training question")
        return math.ceil(self.epochs * questions / self.prompts_per_step)

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.n_samples

    @property
    def resolved_kl_in(self) -> str:
        return self.kl_in or ("loss" if self.estimator in ("grpo", "rloo") else "reward")

    @property
    def resolved_kl_estimator(self) -> str:
        return self.kl_estimator or ("k3" if self.resolved_kl_in == "loss" else "k1")

    @property
    def resolved_loss_agg(self) -> str:
        if self.loss_agg:
            return self.loss_agg
        if self.dr_grpo:
            return "seq-mean-token-sum-norm"
        return "seq-mean-token-mean" if self.estimator == "grpo" else "token-mean"

    @property
    def resolved_advantage(self) -> AdvantageSettings:
        """What the estimators get: ``advantage``, without the group std normalisation under ``dr_grpo``."""
        return dataclasses.replace(self.advantage, norm_by_std=False) if self.dr_grpo else self.advantage

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                            target_modules=self.lora_targets)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLConfig":
        """Build from a mapping (a recipe section); unknown keys are named with close matches."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = move_old_keys(d, cls.OLD_KEYS)
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown rl setting {key!r}{hint}")
        return cls(**d)



def move_old_keys(d: dict[str, Any], old_keys: dict[str, str]) -> dict[str, Any]:
    """``d`` with each key of ``old_keys`` moved where it went (``gamma: 0.99`` -> ``advantage: {gamma: 0.99}``),
    with a warning naming the new key; the same setting given both ways is an error."""
    out = dict(d)
    for old, new in old_keys.items():
        if old not in out:
            continue
        section, name = new.split(".")
        nested = out.get(section) or {}
        nested = dataclasses.asdict(nested) if dataclasses.is_dataclass(nested) else dict(nested)
        if name in nested:
            raise ValueError(f"rl setting {old!r} is given twice: as {old} and as {new}; keep {new}")
        warnings.warn(f"rl setting {old!r} is now {new}", FutureWarning, stacklevel=3)
        nested[name] = out.pop(old)
        out[section] = nested
    return out


def rl_settings(config: RLConfig) -> dict[str, Any]:
    """The settings that make an RL stage's identity: the config without bookkeeping, and without options at the
    value that reproduces RL from before they existed (``RLConfig.LEGACY``). The advantage settings that were flat
    keys before they nested keep their flat names here, so a stage run before keeps its identity."""
    settings = config.to_dict()
    for volatile in ("output_dir", "threads", "tensorboard", "report_to", "log_every", "share_prompts",
                     "skip_zero_advantage", "rollout_states"):
        settings.pop(volatile, None)
    advantage = dict(settings["advantage"])
    for old, new in RLConfig.OLD_KEYS.items():
        settings[old] = advantage.pop(new.removeprefix("advantage."))
    settings["advantage"] = advantage  # the settings that never were flat: only values other than LEGACY stay
    settings = without_legacy_values(settings, RLConfig.LEGACY)
    if not settings["advantage"]:
        del settings["advantage"]
    return settings
