"""Prompt tuning: a trainable soft prompt prepended to every input; the model is untouched."""

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
