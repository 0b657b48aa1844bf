"""The contract every PEFT method fulfils."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from peft import PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, PreTrainedModel

from ccexp.config import ConfigError, target_names

# peft 0.21 reads model.is_gradient_checkpointing, which transformers 5 deprecates: a warning in
# every run's console that only a peft release can act on.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@dataclass(frozen=True)
class MethodSpec:
    """What a method asks of the model loader, and how it wraps the loaded model."""

    peft_config: PeftConfig
    quantization_config: Optional[BitsAndBytesConfig] = None
    gradient_checkpointing: bool = False
    targets_key: str = "model.lora_targets"  # the key that set peft_config's target_modules, for errors

    def wrap(self, model: PreTrainedModel) -> PeftModel:
        if self.quantization_config is not None:
            # Casts norms/embeddings to fp32 for the 4-bit base; checkpointing is set up below.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if self.gradient_checkpointing:
            # Non-reentrant: needs no input grads, and keeps the RNG state, so a recomputed
            # layer draws the very dropout masks of its first forward.
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        check_targets(model, getattr(self.peft_config, "target_modules", None), self.targets_key)
        return get_peft_model(model, self.peft_config)


def check_targets(model: PreTrainedModel, targets, key: str = "model.lora_targets") -> None:
    """LoRA's target names against the model's modules, as peft matches them (a module's full
    name, or its end after a dot): a name that matches none fails here in one line that lists
    the linear layers there are, instead of peft's traceback after the model has loaded."""
    if not targets or isinstance(targets, str):  # a regex string: peft's own matching decides
        return
    # GPT-2's projections are transformers' Conv1D (a linear layer stored transposed), which LoRA takes too.
    def is_linear(module) -> bool:
        return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Conv1D")

    def lora_takes(module) -> bool:  # what peft's LoRA wraps: linear layers, and embeddings and convolutions
        return is_linear(module) or isinstance(module, (torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d,
                                                        torch.nn.Conv3d, torch.nn.MultiheadAttention))

    modules = list(model.named_modules())
    linear = {name.rsplit(".", 1)[-1] for name, m in modules if is_linear(m)}
    missing = sorted(t for t in targets if not any(target_names(n, t) for n, _ in modules))
    if missing:
        raise ConfigError(f"{key}: {missing} name no linear layer of this model (its linear layers: "
                          f"{', '.join(sorted(linear))})")
    # A block (self_attn, mlp) or a norm: peft refuses it with a traceback after the model loaded.
    blocks = sorted({f"{t} ({type(m).__name__})" for t in targets for n, m in modules
                     if target_names(n, t) and not lora_takes(m)})
    if blocks:
        raise ConfigError(f"{key}: {', '.join(blocks)} {'are no linear layers' if len(blocks) > 1 else 'is no linear layer'}"
                          f"; LoRA adapts linear layers (this model's: {', '.join(sorted(linear))})")
