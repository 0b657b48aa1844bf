"""Prompt tuning: a trainable soft prompt prepended to every input; the model is untouched.

peft puts the soft prompt before a left-padded row's padding (``[prompt][pad][text]``) and drops
position ids, so a row's prompt sat further from its text the more padding its batch gave it:
its loss and its answers depended on what else was in the batch (SmolLM2's validation loss 1.60
in batches of 8, 1.42 one at a time). ccexp's batches give each row ``[pad][prompt][text]``
instead (``soft_prompt_inputs``), which is the row alone, padding aside."""

from __future__ import annotations

import torch
from peft import PromptTuningConfig, PromptTuningInit

from ccexp.config import MethodConfig, ModelConfig
from ccexp.methods.base import MethodSpec


def build(cfg: MethodConfig, model: ModelConfig, model_dir: str, compute_dtype: torch.dtype) -> MethodSpec:
    del model, compute_dtype  # the base is loaded as is
    if cfg.init_text:
        peft_config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=cfg.init_text,
            tokenizer_name_or_path=model_dir,  # init text is tokenized with the model's own tokenizer,
        )
    else:
        peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                                         prompt_tuning_init=PromptTuningInit.RANDOM)
    return MethodSpec(peft_config=peft_config, gradient_checkpointing=cfg.gradient_checkpointing)


def prompt_learning(net) -> bool:
    """Whether ``net`` is a peft prompt-learning model (prompt tuning): it takes neither packed
    rows nor ccexp's own decoding loops, and its padded batches go through ``soft_prompt_inputs``."""
    peft_config = getattr(net, "active_peft_config", None)
    return peft_config is not None and peft_config.is_prompt_learning


def soft_prompt_inputs(net, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """A left-padded batch for ``net.base_model`` (or its ``generate``): each row's soft prompt
    right before its text, ``[pad][prompt][text]``, positions counted from the prompt's first
    token, as the row alone would have them."""
    embeds = net.word_embeddings(input_ids)
    prompts = net.get_prompt(batch_size=input_ids.shape[0]).to(embeds.dtype)
    virtual = prompts.shape[1]
    pads = (attention_mask == 0).sum(dim=1, keepdim=True)
    at = torch.arange(input_ids.shape[1] + virtual, device=input_ids.device).expand(input_ids.shape[0], -1)
    # Taken from [prompt][pad][text]: a pad where the row's padding is, then the prompt, then the text.
    source = torch.where(at < pads, at + virtual, torch.where(at < pads + virtual, at - pads, at))
    inputs_embeds = torch.cat([prompts, embeds], dim=1).gather(1, source.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    mask = (at >= pads).to(attention_mask.dtype)
    return {"inputs_embeds": inputs_embeds, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}
