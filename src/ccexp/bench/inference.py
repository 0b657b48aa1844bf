"""Generation speed: batched vs one request at a time, the latency of one all-in-one analysis,
and a merged adapter vs the base model. Greedy, KV cache, the backend's own precision."""

from __future__ import annotations

import statistics
import time

import torch

from ccexp.backends.lightning import TorchBackend
from ccexp.data.batching import prompt_text


def batched_vs_single(backend: TorchBackend, prompts: list[list[dict]], cap: int) -> dict:
    """Tokens/s answering the same prompts in one batch and one at a time (after a warm-up)."""
    backend.generate(prompts[:1], 2)
    tic = time.perf_counter()
    batched = backend.generate(prompts, cap)
    batched_s = time.perf_counter() - tic
    single_s, single_tokens = 0.0, 0
    for prompt in prompts:
        tic = time.perf_counter()
        gen = backend.generate([prompt], cap)
        single_s += time.perf_counter() - tic
        single_tokens += gen.new_tokens[0]
    return {"batched_tokens_per_s": sum(batched.new_tokens) / batched_s,
            "single_tokens_per_s": single_tokens / single_s, "prompts": len(prompts)}


def _generate_exactly(model, tokenizer, text: str, n_tokens: int, autocast_dtype) -> float:
    """Seconds to produce exactly ``n_tokens`` (EOS ignored): the cost of an answer of that
    length, whatever the model would say."""
    enc = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    ctx = torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), ctx:
        tic = time.perf_counter()
        model.generate(**enc, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, use_cache=True,
                       pad_token_id=tokenizer.pad_token_id)
        return time.perf_counter() - tic


def answer_latency(backend: TorchBackend, examples: list[dict], repeats: int = 1) -> dict:
    """p50 seconds for one answer as long as its reference (e.g. one all-in-one analysis)."""
    tok, model = backend.tokenizer, backend.model
    model.eval()
    texts = [prompt_text(tok, ex["messages"][:-1]) for ex in examples]
    lengths = [len(tok(ex["messages"][-1]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"])
               for ex in examples]
    _generate_exactly(model, tok, texts[0], 2, backend.autocast_dtype)  # warm-up
    seconds = [_generate_exactly(model, tok, t, n, backend.autocast_dtype)
               for _ in range(repeats) for t, n in zip(texts, lengths)]
    return {"p50_s": statistics.median(seconds), "answer_tokens_p50": statistics.median(lengths),
            "prompt_tokens_p50": statistics.median(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)}


def merged_vs_base(backend: TorchBackend, base, examples: list[dict], n_tokens: int) -> dict:
    """Single-request latency of the LoRA adapter merged into the weights vs the untouched base,
    interleaved prompt by prompt so drift in machine load hits both alike."""
    tok = backend.tokenizer
    merged = backend.model.merge_and_unload()
    merged.eval()
    base.eval()
    texts = [prompt_text(tok, ex["messages"][:-1]) for ex in examples]
    for model in (merged, base):
        _generate_exactly(model, tok, texts[0], 2, backend.autocast_dtype)
    base_s, merged_s = [], []
    for text in texts:
        base_s.append(_generate_exactly(base, tok, text, n_tokens, backend.autocast_dtype))
        merged_s.append(_generate_exactly(merged, tok, text, n_tokens, backend.autocast_dtype))
    return {"base_p50_s": statistics.median(base_s), "merged_p50_s": statistics.median(merged_s)}
