"""The contract every PEFT method fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from peft import PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, PreTrainedModel


@dataclass(frozen=True)
class MethodSpec:
    """What a method asks of the model loader, and how it wraps the loaded model."""

    peft_config: PeftConfig
    quantization_config: Optional[BitsAndBytesConfig] = None
    gradient_checkpointing: bool = False

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
        return get_peft_model(model, self.peft_config)
