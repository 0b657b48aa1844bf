"""PEFT methods, registered by name. The training code never branches on the method.

Each builder takes the method config and returns a ``MethodSpec``: what the model loader
must do (quantize the base or not) and how to wrap the loaded model.
"""

from functools import partial

from ccexp.methods import lora, prompt_tuning
from ccexp.methods.base import MethodSpec

METHODS = {
    "lora": lora.build,
    # QLoRA is LoRA on a 4-bit base: a variant of its twin, not a second code path.
    "qlora": partial(lora.build, quantize_base=True),
    "prompt_tuning": prompt_tuning.build,
}

__all__ = ["METHODS", "MethodSpec"]
