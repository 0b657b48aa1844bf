"""LoRA (and, with ``quantize_base=True``, QLoRA) for MLX, with mlx-lm's own layers and files.

The layers come from ``mlx_lm.tuner.utils.linear_to_lora_layers`` and the adapter directory is
what ``mlx_lm.lora`` writes (``adapters.safetensors`` + ``adapter_config.json``), so
``mlx_lm.load(model_dir, adapter_path=...)`` and ``mlx_lm.generate --adapter-path`` open it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters
from mlx_lm.utils import load_model, load_tokenizer, save

from ccexp.backends.base import check_saved_config
from ccexp.backends.mlx_prompt import (MLX_LAYOUT, PromptedLM, base_dtype, cast_as_trained, check_supported,
                                       load_weights_checked)
from ccexp.config import ConfigError, MethodConfig, ModelConfig, lora_targets, target_names

log = logging.getLogger("ccexp")

# What a saved adapter and this run's must share (the ccexp key that sets each); dropout only trains.
SAVED_FIELDS = {"fine_tune_type": "method.name", "base_quantization": "method.name (qlora: the 4-bit base)",
                "lora_parameters.rank": "method.r", "lora_parameters.scale": "method.alpha / method.r",
                "lora_parameters.keys": "method.target_modules or model.lora_targets", "num_layers": "model"}

# QLoRA's base: MLX affine 4-bit, 64 weights per scale (mlx-lm's default quantization).
QUANT = {"group_size": 64, "bits": 4, "mode": "affine"}


def quantize_linear_layers(model: nn.Module, model_name: str) -> int:
    """Quantize the linear layers to 4 bits with ``nn.quantize``; return how many. Embeddings and
    the output head (tied or not) stay full precision, as peft's QLoRA recipe keeps ``lm_head``
    out of bitsandbytes' 4-bit layers on the torch path."""
    def linear(path: str, module: nn.Module) -> bool:
        return (isinstance(module, nn.Linear) and module.weight.shape[-1] % QUANT["group_size"] == 0
                and path.rsplit(".", 1)[-1] != "lm_head")

    count = sum(linear(p, m) for p, m in model.named_modules())
    if count == 0:
        raise ConfigError(f"method=qlora: no linear layer of model={model_name} has an input width divisible "
                          f"by the group size {QUANT['group_size']}; use method=lora")
    others = sum(isinstance(m, nn.Linear) and p.rsplit(".", 1)[-1] != "lm_head" for p, m in model.named_modules())
    if count < others:  # a 48-wide model: most of its layers stay full precision, which a reader should know
        log.info("method=qlora: %d of %d linear layers quantized to 4 bits; the others' input widths are not "
                 "multiples of %d and stay full precision", count, others, QUANT["group_size"])
    nn.quantize(model, QUANT["group_size"], QUANT["bits"], mode=QUANT["mode"], class_predicate=linear)
    return count


def lora_keys(model: nn.Module, targets: list[str], key: str, model_name: str) -> list[str]:
    """Paths inside one transformer block (mlx-lm's ``keys``) that a target names as peft matches
    ``target_modules`` (the path, or its end after a dot: ``q_proj`` or ``self_attn.q_proj``),
    so one setting picks the same layers on every backend."""
    linear = {path for path, m in model.layers[0].named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))}
    missing = sorted(t for t in targets if not any(target_names(p, t) for p in linear))
    if missing:
        raise ConfigError(f"{key}: {missing} name no linear layer of model={model_name} (its linear layers: "
                          f"{', '.join(sorted({p.rsplit('.', 1)[-1] for p in linear}))})")
    return sorted(p for p in linear if any(target_names(p, t) for t in targets))


class LoRA:
    """The LoRA adapter: LoRALinear layers inside the model, in every transformer block."""

    def __init__(self, net: PromptedLM, config: dict):
        self.net, self.config = net, config

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model: each LoRALinear swapped for its frozen linear layer, then back."""
        lora = [(name, m) for name, m in self.net.model.named_modules() if isinstance(m, LoRALinear)]
        self.net.model.update_modules(tree_unflatten([(name, m.linear) for name, m in lora]))
        try:
            yield
        finally:
            self.net.model.update_modules(tree_unflatten(lora))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        weights = dict(tree_flatten(self.net.model.trainable_parameters()))  # model.layers.N...lora_a/b
        mx.save_safetensors(str(path / "adapters.safetensors"), weights)
        (path / "adapter_config.json").write_text(json.dumps(self.config, indent=2))

    def load(self, path: Path) -> None:
        check_saved_config(Path(path) / "adapter_config.json", self.config, SAVED_FIELDS, MLX_LAYOUT)
        expected = dict(tree_flatten(self.net.model.trainable_parameters()))
        saved = load_weights_checked(Path(path) / "adapters.safetensors", expected)
        self.net.model.load_weights(list(saved.items()), strict=False)

    def fuse(self, adapter_dir: Path, out: Path) -> None:
        fuse(Path(self.config["model"]), adapter_dir, out)


def attach(net: PromptedLM, method: MethodConfig, model: ModelConfig, model_dir: Path, tokenizer,
           quantize_base: bool = False) -> LoRA:
    """Freeze the model (quantizing it first for QLoRA) and put LoRA on the target linear
    layers of every block: rank r, scale alpha / r, dropout on the LoRA input."""
    del tokenizer  # LoRA needs nothing from it
    check_supported(net.model, model.name)
    if quantize_base:
        quantize_linear_layers(net.model, model.name)
    net.freeze()
    params = {"rank": method.r, "scale": method.alpha / method.r, "dropout": method.dropout,
              "keys": lora_keys(net.model, *lora_targets(method, model), model_name=model.name)}
    num_layers = len(net.model.layers)
    linear_to_lora_layers(net.model, num_layers, params)
    # mlx_lm.lora's adapter_config.json fields that load_adapters reads, plus where it came from.
    config = {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": params,
              "model": str(model_dir), "base_quantization": QUANT if quantize_base else None,
              "base_dtype": base_dtype(net.model)}
    return LoRA(net, config)


def load(model_dir: str | Path, adapter_dir: str | Path):
    """(model, tokenizer): the adapter on its base as ccexp trained and scored it. For an fp32
    LoRA run that is ``mlx_lm.load(model_dir, adapter_path=adapter_dir)``; here the base is cast
    to the dtype it was trained in (``backend.precision``) and a QLoRA adapter's base is quantized,
    as in training, where mlx_lm.load would put the adapter on the checkpoint's full-precision
    base: another model, whose answers differ from those evaluated."""
    model, _, _ = _base_as_trained(Path(model_dir), Path(adapter_dir))
    load_adapters(model, str(adapter_dir))
    model.eval()
    return model, load_tokenizer(Path(model_dir))


def _base_as_trained(model_dir: Path, adapter_dir: Path) -> tuple[nn.Module, dict, dict]:
    """(model, its config.json, the adapter's config): the base loaded, cast to the dtype the
    adapter recorded, then quantized if it trained on a 4-bit base (training's order)."""
    from ccexp.cli import read_json_object

    file = adapter_dir / "adapter_config.json"
    saved = read_json_object(file, ConfigError, "an mlx-lm adapter_config.json")
    model, config = load_model(model_dir)
    cast_as_trained(model, saved, file)
    if saved.get("base_quantization"):
        quantize_linear_layers(model, str(model_dir))
    return model, config, saved


def fuse(model_dir: Path, adapter_dir: Path, out: Path) -> None:
    """``mlx_lm.fuse`` in-process: base + adapter merged, saved as an mlx-lm model directory that
    ``mlx_lm.load(out)`` opens with no adapter, in the dtype the base trained in. QLoRA's base is
    quantized as in training, and each adapted layer is merged de-quantized
    (``mlx_lm.fuse --dequantize``'s merge): rounding W + ΔW to 4 bits again would undo most of
    what a small adapter learned. The layers without an adapter stay 4-bit, as trained."""
    model, config, saved = _base_as_trained(model_dir, adapter_dir)
    if saved.get("base_quantization"):
        config["quantization"] = dict(QUANT)
    if saved.get("base_dtype"):  # config.json says what the weights are, for transformers' readers
        config["torch_dtype"] = saved["base_dtype"]
    load_adapters(model, str(adapter_dir))
    fused = [(name, m.fuse(dequantize=True)) for name, m in model.named_modules() if hasattr(m, "fuse")]
    model.update_modules(tree_unflatten(fused))
    save(out, model_dir, model, load_tokenizer(model_dir), config, donate_model=False)
