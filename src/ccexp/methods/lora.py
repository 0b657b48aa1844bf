"""LoRA (and, with ``quantize_base=True``, QLoRA)."""

from __future__ import annotations

import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from ccexp.config import MethodConfig, ModelConfig, lora_targets
from ccexp.methods.base import MethodSpec


def build(cfg: MethodConfig, model: ModelConfig, model_dir: str, compute_dtype: torch.dtype,
          quantize_base: bool = False) -> MethodSpec:
    del model_dir  # LoRA needs nothing from the model files
    targets, targets_key = lora_targets(cfg, model)
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
    )
    quantization = None
    if quantize_base:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant_type,
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return MethodSpec(peft_config=peft_config, quantization_config=quantization,
                      gradient_checkpointing=cfg.gradient_checkpointing,
                      targets_key=targets_key)
