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

    def wrap(self, model: PreTrainedModel) -> PeftModel:
        if self.quantization_config is not None:
            # Casts norms/embeddings to fp32 and enables input grads for the 4-bit base;
            # gradient checkpointing stays off: these models are small enough without it.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, self.peft_config)
