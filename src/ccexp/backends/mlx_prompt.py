"""Prompt tuning for MLX (mlx-lm has none): trainable soft-prompt vectors in front of every input.

``PromptedLM`` wraps an mlx-lm model: with no soft prompt it is the model itself, with one it
prepends the vectors on the first forward pass of a sequence. It keeps mlx-lm's model call
(tokens, cache, input_embeddings), so ``mlx_lm.generate`` runs a prompt-tuned model unchanged.

The adapter directory holds ``prompt_embeddings.safetensors`` (one ``[virtual tokens, hidden]``
array) and ``prompt_config.json``; ``load(model, path)`` puts them back on a loaded model.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from pathlib import Path
from typing import Iterator, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import make_prompt_cache

from ccexp.backends.base import check_saved_config
from ccexp.config import ConfigError, MethodConfig, ModelConfig

WEIGHTS, CONFIG = "prompt_embeddings.safetensors", "prompt_config.json"
MLX_LAYOUT = "mlx backend"


def load_weights_checked(file: Path, expected: dict[str, mx.array]) -> dict[str, mx.array]:
    """Adapter weights saved by ccexp, checked name by name and shape by shape against the
    adapter this run built (same method and settings), or a ConfigError naming the file."""
    if not file.is_file():
        raise ConfigError(f"{file}: no such file; expected an adapter saved by ccexp's mlx backend")
    try:
        saved = mx.load(str(file))
    except (RuntimeError, ValueError, OSError) as err:  # a truncated or foreign file
        raise ConfigError(f"{file}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    if set(saved) != set(expected):
        odd = sorted(set(saved) ^ set(expected))[0]
        raise ConfigError(f"{file}: tensors differ from this method's adapter (e.g. {odd})")
    for name, value in saved.items():
        if value.shape != expected[name].shape:
            raise ConfigError(f"{file}: {name} has shape {value.shape}, expected {expected[name].shape}")
    return saved


def base_dtype(model: nn.Module) -> str:
    """The dtype the frozen base runs in (``backend.precision``'s cast, or the checkpoint's), as
    recorded beside an adapter ("bfloat16"): the loaders give the base that dtype again."""
    return str(model.model.embed_tokens.weight.dtype).rsplit(".", 1)[-1]


def cast_as_trained(model: nn.Module, saved: dict, file: Path) -> None:
    """Cast a freshly loaded base to the dtype its adapter was trained and scored on: loaded as
    the checkpoint is (fp32), a bf16-trained adapter's model gives other logits than those scored.
    An adapter from an older ccexp records none: the base stays as loaded."""
    name = saved.get("base_dtype")
    if name is None:
        return
    dtype = getattr(mx, str(name), None)
    if not isinstance(dtype, mx.Dtype):
        raise ConfigError(f"{file}: base_dtype {name!r} is not an MLX dtype; expected e.g. float32 or bfloat16")
    model.set_dtype(dtype)


class PromptedLM(nn.Module):
    """An mlx-lm model behind an optional soft prompt (the trainable ``prompt`` array).

    The loss needs the hidden states and the output head separately (vocabulary logits only
    where an answer token is predicted), so it reaches into the llama-style layout every
    supported architecture shares: ``model.model`` (embeddings, layers, norm) + ``lm_head``
    or tied embeddings.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def n_prefix(self) -> int:
        return self["prompt"].shape[0] if "prompt" in self else 0

    @property
    def layers(self):
        return self.model.layers

    def make_cache(self) -> list:
        return make_prompt_cache(self.model)

    def _embeddings(self, tokens: mx.array) -> Optional[mx.array]:
        """Soft prompt + token embeddings, or None without a soft prompt."""
        if "prompt" not in self:
            return None
        embedded = self.model.model.embed_tokens(tokens)
        prefix = mx.broadcast_to(self.prompt.astype(embedded.dtype), (tokens.shape[0], *self.prompt.shape))
        return mx.concatenate([prefix, embedded], axis=1)

    def hidden(self, tokens: mx.array) -> mx.array:
        """Final hidden states [batch, prefix + length, hidden] (normed, before the head)."""
        embeddings = self._embeddings(tokens)
        if embeddings is None:
            return self.model.model(tokens)
        return self.model.model(tokens, input_embeddings=embeddings)

    def head(self, hidden: mx.array) -> mx.array:
        """The logits the model's own call gives: its output head, then the final logit softcap
        of the models that have one (mlx-lm's gemma4_text, gear), which the call applies after it."""
        if "lm_head" in self.model:
            logits = self.model.lm_head(hidden)
        else:
            logits = self.model.model.embed_tokens.as_linear(hidden)
        cap = final_logit_softcap(self.model)
        return logits if cap is None else mx.tanh(logits / cap) * cap

    def __call__(self, inputs: mx.array, cache=None, input_embeddings=None) -> mx.array:
        # The prefix goes in once per sequence: on its first chunk, when the cache is empty.
        if input_embeddings is None and (cache is None or cache[0].offset == 0):
            input_embeddings = self._embeddings(inputs)
        if input_embeddings is None:
            return self.model(inputs, cache=cache)
        return self.model(inputs, cache=cache, input_embeddings=input_embeddings)


def final_logit_softcap(model: nn.Module) -> Optional[float]:
    """The cap mlx-lm's model call puts on its logits (tanh(logits / cap) * cap), or None."""
    cap = getattr(model, "final_logit_softcapping", None)
    return cap if cap is not None else getattr(getattr(model, "args", None), "final_logit_softcapping", None)


def check_supported(model: nn.Module, model_name: str) -> None:
    """The llama-style layout PromptedLM relies on, or a one-line error naming the model. The
    losses take the logits as PromptedLM.head(hidden), not from the model's call: a model whose
    call changes them after its head in another way would be scored on logits it never gives,
    so two tokens through both ways must agree."""
    inner = getattr(model, "model", None)
    if inner is None or "embed_tokens" not in inner or "input_embeddings" not in inspect.signature(inner).parameters:
        raise ConfigError(f"model={model_name}: backend=mlx supports llama-style mlx-lm models "
                          f"(llama, mistral, qwen2, ...); {type(model).__module__} has another layout")
    net, probe = PromptedLM(model), mx.array([[0, 1]])
    ours, theirs = net.head(net.hidden(probe)).astype(mx.float32), model(probe).astype(mx.float32)
    if not mx.allclose(ours, theirs, rtol=1e-3, atol=1e-3).item():
        raise ConfigError(f"model={model_name}: backend=mlx computes losses from the output head of the hidden "
                          f"states, and {type(model).__module__}'s call changes its logits after the head; "
                          "use backend=cpu or cuda for it")


class SoftPrompt:
    """The prompt-tuning adapter: the ``prompt`` array on a PromptedLM."""

    def __init__(self, net: PromptedLM, info: dict):
        self.net, self.info = net, info

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model: the soft prompt taken off, then put back."""
        prompt = self.net.pop("prompt")
        try:
            yield
        finally:
            self.net.prompt = prompt

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path / WEIGHTS), {"prompt_embeddings": self.net.prompt})
        (path / CONFIG).write_text(json.dumps(self.info, indent=2))

    def load(self, path: Path) -> None:
        check_saved_config(Path(path) / CONFIG, self.info,
                           {"method": "method.name", "num_virtual_tokens": "method.num_virtual_tokens"}, MLX_LAYOUT)
        saved = load_weights_checked(Path(path) / WEIGHTS, {"prompt_embeddings": self.net.prompt})
        self.net.prompt = saved["prompt_embeddings"]

    def fuse(self, adapter_dir: Path, out: Path) -> None:
        raise ConfigError("backend.fuse: a soft prompt has no weights to merge")  # RunConfig refuses it first


def attach(net: PromptedLM, method: MethodConfig, model: ModelConfig, model_dir: Path, tokenizer) -> SoftPrompt:
    """Freeze the model; add ``method.num_virtual_tokens`` trainable vectors, initialised like
    peft: from ``init_text``'s token embeddings (repeated to length), else N(0, 1)."""
    check_supported(net.model, model.name)
    net.freeze()
    n = method.num_virtual_tokens
    embed = net.model.model.embed_tokens
    if method.init_text:
        ids = tokenizer(method.init_text, add_special_tokens=False)["input_ids"]
        ids = (ids * math.ceil(n / len(ids)))[:n]
        prompt = embed(mx.array(ids)).astype(mx.float32)
    else:
        prompt = mx.random.normal((n, embed.weight.shape[1]))
    net.prompt = prompt
    net.unfreeze(keys=["prompt"], recurse=False)
    info = {"method": "prompt_tuning", "num_virtual_tokens": n, "hidden_size": int(prompt.shape[1]),
            "init_text": method.init_text, "model": str(model_dir), "base_dtype": base_dtype(net.model)}
    return SoftPrompt(net, info)


def load(model: nn.Module, path: str | Path) -> PromptedLM:
    """A loaded mlx-lm model with the soft prompt saved in ``path`` in front of it, cast to the
    dtype it was trained in (``backend.precision``; the model is changed in place)."""
    path = Path(path)
    info = json.loads((path / CONFIG).read_text())
    cast_as_trained(model, info, path / CONFIG)
    net = PromptedLM(model)
    net.prompt = mx.load(str(path / WEIGHTS))["prompt_embeddings"]
    if net.prompt.shape != (info["num_virtual_tokens"], info["hidden_size"]):
        raise ValueError(f"{path}: prompt shape {net.prompt.shape} does not match {CONFIG}")
    return net
