"""The models of the RL loop: a LoRA policy, its reference (the same weights, adapter off) and a critic.

One copy of the base weights serves three roles:

* the **policy** is the base (with the SFT adapter merged in, when RL starts from one) plus a
  trainable LoRA adapter named ``default``;
* the **reference** is the same model with the adapters disabled — no second copy of the weights;
* the **critic** (PPO/``gae`` only) is a value head on a second LoRA adapter ``critic`` of the same
  base, or a separate model with its own LoRA adapter and value head.

Forward passes compute hidden states once and apply the LM head to the response positions only:
no logits over the prompt, no full-sequence vocabulary tensors.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from openrft.models.loading import lm_head_of
from openrft.models.lora import STACK_FILE, LoraSettings, load_adapter, lora_config, resolve_adapter_dir
from openrft.rewards.prm.value_head import ValueHead
from openrft.rl.losses import entropy_from_logits, token_logprobs

logger = logging.getLogger(__name__)

POLICY_ADAPTER = "default"
CRITIC_ADAPTER = "critic"
#: ``critic: shared``: the value head reads the policy's own hidden states (ReFT's AutoModelForCausalLMWithValueHead)
SHARED_CRITIC = "shared"
VALUE_HEAD = "value_head.safetensors"


def backbone_of(model: nn.Module) -> nn.Module:
    """The transformer body (no LM head) of a causal LM, peft-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, getattr(inner, "base_model_prefix", "model"), None)
    if body is None or body is inner:
        raise TypeError(f"cannot find the transformer body of {type(inner).__name__}; expected a *ForCausalLM model")
    return body


def hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor, past_key_values=None) -> torch.Tensor:
    """Last-layer hidden states ``[B, L, H]`` (through the active LoRA adapter, if any); with ``past_key_values``
    the inputs continue the cached ones (and the cache grows by them)."""
    out = backbone_of(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, use_cache=past_key_values is not None)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def response_slice(h: torch.Tensor, prompt_width: int, response_width: int) -> torch.Tensor:
    """The hidden states that predict the response tokens: columns ``P-1 .. P+T-2``."""
    return h[:, prompt_width - 1: prompt_width - 1 + response_width]


def response_hidden(model: nn.Module, batch, share_prompts: bool = True) -> torch.Tensor:
    """The hidden states ``[B, T, H]`` that predict ``batch``'s response tokens; each distinct prompt runs once.

    The n completions of a prompt share its tokens (a group's rows are identical up to the prompt width), so
    the distinct prompts are run once into a KV cache, the cache is expanded to the rows, and only the responses
    run per row: with few-shot prompts several times longer than the responses this is most of the forward and
    backward saved. Gradients flow through the shared prompt states into every row, as in the full forward.
    """
    P, T = batch.prompt_width, batch.response_width
    prompt = torch.cat([batch.input_ids[:, :P], batch.attention_mask[:, :P].long()], dim=1)
    distinct, rows = torch.unique(prompt, dim=0, return_inverse=True)
    if len(distinct) == len(prompt) or not share_prompts:
        h = hidden_states(model, batch.input_ids, batch.attention_mask, batch.position_ids)
        return response_slice(h, P, T)
    from transformers import DynamicCache

    first = torch.empty(len(distinct), dtype=torch.long, device=rows.device).scatter_(
        0, rows, torch.arange(len(rows), device=rows.device))  # a row holding each prompt (any one of them)
    cache = DynamicCache()
    h_prompt = hidden_states(model, batch.input_ids[first, :P], batch.attention_mask[first, :P],
                             batch.position_ids[first, :P], past_key_values=cache)
    last = h_prompt[rows, -1:]  # predicts the first response token
    if T == 1:
        return last
    for layer in cache.layers:
        layer.batch_select_indices(rows)
    h = hidden_states(model, batch.input_ids[:, P:P + T - 1], batch.attention_mask[:, :P + T - 1],
                      batch.position_ids[:, P:P + T - 1], past_key_values=cache)
    return torch.cat([last, h], dim=1)


class ActorCritic:
    """Policy (+ reference through disabled adapters) and, for PPO, a critic.

    Args:
        model: a causal LM (the base, with any SFT adapter already merged).
        tokenizer: its tokenizer.
        lora: the policy's LoRA settings.
        critic: ``None`` (critic-free), ``"adapter"`` (second adapter on ``model``), ``"shared"`` (a value head
            on the policy's own hidden states: one forward gives log-probs and values, as in ReFT) or a model
            name/path.
        resume_adapter: a saved policy adapter to continue training from instead of a fresh one.

    ``share_prompts``: run each distinct prompt of a micro-batch once (:func:`response_hidden`).
    """

    share_prompts: bool = True

    def __init__(self, model: nn.Module, tokenizer, lora: LoraSettings, critic: str | None = None,
                 temperature: float = 1.0, dtype="auto"):
        from peft import get_peft_model

        self.tokenizer = tokenizer
        self.temperature = temperature
        peft_cfg = lora_config(model, lora)  # resolve target modules on the plain model, before wrapping
        self.model = get_peft_model(model, peft_cfg, adapter_name=POLICY_ADAPTER)
        self.device = next(self.model.parameters()).device
        self.critic_kind = critic
        self.critic_model: nn.Module | None = None
        self.value_head: ValueHead | None = None
        if critic == SHARED_CRITIC:
            self.value_head = ValueHead(model.config.hidden_size, zero_init=True).to(self.device)  # fp32 head
        elif critic == "adapter":
            import copy

            self.model.add_adapter(CRITIC_ADAPTER, copy.deepcopy(peft_cfg))
            self.model.set_adapter(POLICY_ADAPTER)
            self.value_head = ValueHead(model.config.hidden_size, zero_init=True).to(self.device)  # fp32 head
        elif critic:
            from peft import get_peft_model as gpm

            from openrft.models.loading import load_model

            cmodel, _ = load_model(critic, dtype=dtype, device=self.device)
            self.critic_model = gpm(cmodel, lora_config(cmodel, lora), adapter_name=CRITIC_ADAPTER)
            self.value_head = ValueHead(cmodel.config.hidden_size, zero_init=True).to(self.device)
        self.model.train()

    # ---- parameters -------------------------------------------------------------------------
    def _adapter_params(self, model: nn.Module, name: str) -> list[nn.Parameter]:
        return [p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]

    def policy_parameters(self) -> list[nn.Parameter]:
        params = self._adapter_params(self.model, POLICY_ADAPTER)
        for p in params:
            p.requires_grad_(True)
        return params

    @property
    def shared_critic(self) -> bool:
        return self.critic_kind == SHARED_CRITIC

    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic's own parameters (a shared critic's: the value head; the backbone is the policy's)."""
        if self.value_head is None:
            return []
        if self.shared_critic:
            return list(self.value_head.parameters())
        model = self.critic_model if self.critic_model is not None else self.model
        params = self._adapter_params(model, CRITIC_ADAPTER)
        for p in params:
            p.requires_grad_(True)
        return params + list(self.value_head.parameters())

    @contextmanager
    def merged_policy(self):
        """Generate from the policy with its adapter folded into the base weights (CPU only), then put the exact
        base weights back.

        An unmerged rank-r adapter on every linear layer adds two small matmuls per layer to every decode step
        (a sizeable share of a small model's CPU decode step). The base weights are copied before the merge and
        copied back after, rather than unmerged by subtraction, so no rounding drift builds up over steps and a resumed run
        samples exactly what an uninterrupted one does. On CUDA (where the copy would cost a second set of
        weights in GPU memory and the adapter's matmuls are cheap) this does nothing.
        """
        if self.device.type != "cpu":
            yield
            return
        from peft.tuners.lora import LoraLayer

        saved: list[tuple[LoraLayer, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for module in self.model.modules():
                    if (isinstance(module, LoraLayer) and POLICY_ADAPTER in module.lora_A
                            and not module.merged_adapters):
                        weight = module.get_base_layer().weight
                        saved.append((module, weight.detach().clone()))
                        weight.add_(module.get_delta_weight(POLICY_ADAPTER).to(weight.dtype))
                        module.merged_adapters.append(POLICY_ADAPTER)
            yield
        finally:
            with torch.no_grad():
                for module, weight in saved:
                    module.get_base_layer().weight.copy_(weight)
                    module.merged_adapters.remove(POLICY_ADAPTER)

    # ---- forward passes -------------------------------------------------------------------------
    @contextmanager
    def _adapter(self, name: str):
        """Route the shared model through adapter ``name`` (peft toggles requires_grad; we restore it)."""
        if name == POLICY_ADAPTER or self.critic_model is not None or self.shared_critic:
            yield
            return
        flags = {id(p): p.requires_grad for p in self.model.parameters()}
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY_ADAPTER)
            for p in self.model.parameters():
                p.requires_grad_(flags[id(p)])

    def logprobs(self, batch, *, with_entropy: bool = False, entropy_grad: bool = False, reference: bool = False):
        """Log-probabilities ``[B, T]`` of the response tokens (and their entropies, differentiable only when
        ``entropy_grad``) under the policy, or under the reference (adapters off)."""
        ctx = self.model.disable_adapter() if reference else _nullcontext()
        with ctx:
            h = response_hidden(self.model, batch, self.share_prompts)
        return self._logprobs_of(h, batch, with_entropy, entropy_grad)

    def _logprobs_of(self, h: torch.Tensor, batch, with_entropy: bool, entropy_grad: bool):
        logits = lm_head_of(self.model)(h)
        logp = token_logprobs(logits, batch.response_ids, temperature=self.temperature)
        ent = None
        if with_entropy:
            if entropy_grad:
                ent = entropy_from_logits(logits, temperature=self.temperature)
            else:
                with torch.no_grad():
                    ent = entropy_from_logits(logits.detach(), temperature=self.temperature)
        return logp, ent

    def scores_from_states(self, h: torch.Tensor, batch, *, logprobs: bool = True, values: bool = True):
        """``(logp, values)`` ``[B, T]`` (None where not asked; values only for a shared critic) from last-layer
        states ``h`` ``[B, T, H]`` that predict ``batch``'s response tokens: what :meth:`logprobs` and
        :meth:`values` give after their forward. The transformers rollout computes these states as it samples."""
        logp = self._logprobs_of(h, batch, False, False)[0].float() if logprobs else None
        vals = self.value_head(h).float() if values and self.shared_critic else None
        return logp, vals

    def logprobs_and_values(self, batch, *, with_entropy: bool = False, entropy_grad: bool = False):
        """``(logp, entropy, values)`` from one forward of the policy (``critic: shared`` only): the value head
        reads the same hidden states, so the value loss trains the policy's adapter too (weighted by vf_coef)."""
        if not self.shared_critic:
            raise RuntimeError("logprobs_and_values needs critic='shared'")
        h = response_hidden(self.model, batch, self.share_prompts)
        logp, ent = self._logprobs_of(h, batch, with_entropy, entropy_grad)
        return logp, ent, self.value_head(h).float()

    def values(self, batch, head_only: bool = False) -> torch.Tensor:
        """Critic values ``[B, T]``: V(prompt + response[:t]) for each response token t. ``head_only`` (a shared
        critic): the backbone runs without gradients, so only the value head learns from these values."""
        if self.value_head is None:
            raise RuntimeError("this ActorCritic has no critic (critic-free estimator)")
        if self.shared_critic:
            with torch.no_grad() if head_only else _nullcontext():
                h = response_hidden(self.model, batch, self.share_prompts)
            return self.value_head(h).float()
        model = self.critic_model if self.critic_model is not None else self.model
        with self._adapter(CRITIC_ADAPTER):
            return self.value_head(response_hidden(model, batch, self.share_prompts)).float()

    # ---- saving / loading ------------------------------------------------------------------------
    def save_policy(self, out_dir: str | os.PathLike, stacked_on: str | os.PathLike | None = None) -> Path:
        """Write the policy adapter (loadable by ``openrft eval --adapter``) into ``out_dir``."""
        import shutil

        out = Path(out_dir)
        self.model.save_pretrained(out, selected_adapters=[POLICY_ADAPTER], safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        if stacked_on is not None:
            base = resolve_adapter_dir(stacked_on)
            shutil.copytree(base, out / "base_adapter", dirs_exist_ok=True)
            (out / STACK_FILE).write_text(json.dumps({"stacked_on": "base_adapter"}))
        return out

    def save_critic(self, out_dir: str | os.PathLike) -> Path | None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        if self.value_head is None:
            return None
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.critic_model if self.critic_model is not None else self.model
        state = {} if self.shared_critic else {
            f"adapter.{k}": v.detach().cpu().contiguous()
            for k, v in get_peft_model_state_dict(model, adapter_name=CRITIC_ADAPTER).items()}
        state.update({f"v_head.{k}": v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()})
        save_file(state, str(out / VALUE_HEAD))
        return out

    def load_state(self, ckpt_dir: str | os.PathLike) -> None:
        """Restore the policy adapter (and critic) weights from a checkpoint written by :meth:`save_policy` /
        :meth:`save_critic`."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        ckpt = Path(ckpt_dir)
        policy = load_file(str(resolve_adapter_dir(ckpt / "policy") / "adapter_model.safetensors"))
        set_peft_model_state_dict(self.model, policy, adapter_name=POLICY_ADAPTER)
        if self.value_head is not None:
            state = load_file(str(ckpt / "critic" / VALUE_HEAD))
            adapter = {k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")}
            head = {k[len("v_head."):]: v for k, v in state.items() if k.startswith("v_head.")}
            model = self.critic_model if self.critic_model is not None else self.model
            if not self.shared_critic:
                set_peft_model_state_dict(model, adapter, adapter_name=CRITIC_ADAPTER)
            self.value_head.load_state_dict(head)


@contextmanager
def _nullcontext():
    yield


def load_base(model_name: str, adapter: str | None, dtype="auto", device=None):
    """``(model, tokenizer)``: the base model with ``adapter`` (an SFT output) merged in, ready for a fresh LoRA."""
    from openrft.models.loading import load_model

    model, tokenizer = load_model(model_name, dtype=dtype, device=device)
    if adapter is not None:
        model = load_adapter(model, adapter).merge_and_unload()
        model.to(next(model.parameters()).device)
        logger.info("rl: merged the SFT adapter %s into %s; it is the reference policy", adapter, model_name)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer
