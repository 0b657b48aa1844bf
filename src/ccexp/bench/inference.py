"""Generation speed: batched vs one request at a time, the latency of one all-in-one analysis,
and a merged adapter vs the base model. Greedy, KV cache, the backend's own precision."""

from __future__ import annotations

import math
import statistics
import time
from typing import NamedTuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ccexp.backends import decoding
from ccexp.backends.lightning import TorchBackend
from ccexp.bench.training import autocast, sync
from ccexp.data.batching import common_prefix_all, prompt_text


class Timed(NamedTuple):
    """Seconds for a whole generation, and for its prompt pass: up to the first new tokens."""

    seconds: float
    prompt_s: float


def batched_vs_single(backend: TorchBackend, prompts: list[list[dict]], n_tokens: int) -> dict:
    """Tokens/s producing exactly ``n_tokens`` per prompt for the same prompts (after a warm-up):
    all in one batch as ccexp's evaluation runs it (``decoding.greedy_decode_batch``: each prompt
    start several prompts share once, each prompt unpadded, batched decode steps on the
    inference weights)
    against ``generate`` one prompt at a time, the plain Hugging Face way; ``generate`` on the
    whole batch too, which tells batching from ccexp's loop. The same work on every side,
    whatever the model says. Each run's prompt passes (up to its first new tokens) are timed
    within it: batching can only save decode steps where one prompt's pass already keeps the
    hardware busy."""
    tok, model = backend.tokenizer, backend.model
    model.eval()
    texts = [prompt_text(tok, messages) for messages in prompts]
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in texts]
    _generate_exactly(backend, texts[:1], 2)
    _ccexp_batch(backend, ids[:2], 2)
    batched = _ccexp_batch(backend, ids, n_tokens)
    single = [_generate_exactly(backend, [t], n_tokens) for t in texts]
    single_s, single_prefill_s = sum(s.seconds for s in single), sum(s.prompt_s for s in single)
    generate_batched = _generate_exactly(backend, texts, n_tokens)
    work = len(texts) * n_tokens
    return {"batched_tokens_per_s": work / batched.seconds, "single_tokens_per_s": work / single_s,
            "generate_batched_tokens_per_s": work / generate_batched.seconds,
            "batched_prefill_s": batched.prompt_s, "single_prefill_s": single_prefill_s,
            "decode_ratio": (single_s - single_prefill_s) / max(batched.seconds - batched.prompt_s, 1e-9),
            "shared_prefix_tokens": common_prefix_all(ids, min(map(len, ids)) - 1),
            "prompts": len(texts), "new_tokens_each": n_tokens, "batched_loop": "ccexp"}


def _ccexp_batch(backend: TorchBackend, ids: list[list[int]], n_tokens: int) -> Timed:
    """ccexp's batched loop, as ``TorchBackend.generate`` runs a batch, producing exactly
    ``n_tokens`` per prompt (no EOS)."""
    with torch.inference_mode(), _autocast(backend), backend.inference_weights(adapter=True):
        sync(backend.device)
        tic = time.perf_counter()
        answers, first_token_s = decoding.greedy_decode_batch(backend.model, ids, n_tokens, None,
                                                              share_prefix=backend.cfg.backend.prefix_cache)
        sync(backend.device)
        assert all(len(a) == n_tokens for a in answers)
        return Timed(time.perf_counter() - tic, first_token_s)


def _autocast(backend: TorchBackend) -> torch.autocast:
    return autocast(backend.device, backend.autocast_dtype)


def _generate_exactly(backend: TorchBackend, texts: list[str], n_tokens: int, model=None) -> Timed:
    """``model`` (default: the backend's) producing exactly ``n_tokens`` per prompt (EOS
    ignored), left-padded as one batch: the cost of answers of that length, whatever the model
    would say."""
    model, tokenizer = model or backend.model, backend.tokenizer
    enc = tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True).to(backend.device)
    prompt_done = _PromptDone(backend.device)
    with torch.inference_mode(), _autocast(backend):
        sync(backend.device)
        tic = time.perf_counter()
        model.generate(**enc, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, use_cache=True,
                       pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([prompt_done]))
        sync(backend.device)
        return Timed(time.perf_counter() - tic, prompt_done.at - tic)


class _PromptDone(LogitsProcessor):
    """Notes when ``generate`` first scores logits: its prompt pass has just ended. Timed
    within the run, the prompt pass needs no second run of one new token."""

    def __init__(self, device: str):
        self.device, self.at = device, math.nan

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if math.isnan(self.at):
            sync(self.device)
            self.at = time.perf_counter()
        return scores


def answer_latency(backend: TorchBackend, examples: list[dict], train: list[dict]) -> dict:
    """p50 seconds for one answer as long and as worded as its reference (e.g. one all-in-one
    analysis), one request at a time, two ways:

    - ``generate``: transformers' greedy loop, exactly the reference's token count;
    - ccexp's single-request path (``decoding.greedy_decode``): n-gram drafts from the prompt and
      the ``train`` answers, the prompt prefix shared with an earlier request reused, the
      weights packed (the adapter beside them in bf16, merged in fp32) where ``backend.packed_weights``
      applies. Its cost
      depends on what the model says (a right draft saves steps), so the reference stands in for
      the model's choices: the time of a model that answers like the reference, which this
      briefly trained adapter does not yet do.
    Both after a warm-up request on a training prompt (so no timed prompt finds itself in the
    prefix cache); every forward pass is real."""
    tok, model = backend.tokenizer, backend.model
    model.eval()
    texts = [prompt_text(tok, ex["messages"][:-1]) for ex in [*examples, train[0]]]
    answers = [tok(ex["messages"][-1]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"]
               for ex in [*examples, train[0]]]
    warm_text, warm_answer = texts.pop(), answers.pop()
    lengths = [len(a) for a in answers]
    _generate_exactly(backend, [warm_text], 2)
    runs = [_generate_exactly(backend, [t], n) for t, n in zip(texts, lengths)]
    # Where generate's time goes: the prompt's forward pass and each token after it.
    seconds, prefill = [r.seconds for r in runs], [r.prompt_s for r in runs]
    per_token = [(s - p) / max(n - 1, 1) for s, p, n in zip(seconds, prefill, lengths)]

    drafter = decoding.drafter_from_answers(tok, [ex["messages"][-1]["content"] for ex in train])
    cache = decoding.PrefixCache()
    ours, passes, reused = [], [], []
    with _autocast(backend), backend.inference_weights(adapter=True):
        for i, (text, answer) in enumerate([(warm_text, warm_answer), *zip(texts, answers)]):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            sync(backend.device)
            tic = time.perf_counter()
            _, _, stats = decoding.greedy_decode(model, ids, len(answer), tok.eos_token_id, drafter=drafter,
                                                 draft_tokens=backend.cfg.backend.draft_tokens, prefix_cache=cache,
                                                 cache_key=True, teacher=answer)
            sync(backend.device)
            if i > 0:  # 0: the warm-up
                ours.append(time.perf_counter() - tic)
                passes.append(stats["forward_passes"])
                reused.append(stats["prefix_tokens_reused"])
    return {"p50_s": statistics.median(ours), "generate_p50_s": statistics.median(seconds),
            "answer_tokens_p50": statistics.median(lengths), "forward_passes_p50": statistics.median(passes),
            "prefix_reused_p50": statistics.median(reused), "prefill_p50_s": statistics.median(prefill),
            "decode_token_p50_s": statistics.median(per_token),
            "prompt_tokens_p50": statistics.median(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts),
            "packed_weights": backend.packed is not None,
            # bf16: the adapter's update beside the packed base; fp32: merged into it (packed.py).
            "packed_lora": None if backend.packed is None else
            "merged" if backend.packed.dtype == torch.float32 else "beside"}


def merged_vs_base(backend: TorchBackend, base, examples: list[dict], n_tokens: int) -> dict:
    """Single-request latency of the LoRA adapter merged into the weights vs the untouched base,
    interleaved prompt by prompt, who goes first alternating, so drift in machine load and
    whatever the previous request left in the caches hit both alike."""
    tok = backend.tokenizer
    merged = backend.model.merge_and_unload()
    # As it would be served: a QLoRA model's norms and head were kept in fp32 for training
    # (prepare_model_for_kbit_training); back in the base's dtype, as the base has them.
    dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
    for param in merged.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    merged.eval()
    base.eval()
    texts = [prompt_text(tok, ex["messages"][:-1]) for ex in examples]
    for model in (merged, base):
        _generate_exactly(backend, texts[:1], 2, model)
    seconds: dict[str, list[float]] = {"base": [], "merged": []}
    for i, text in enumerate(texts):
        for name in ("base", "merged") if i % 2 == 0 else ("merged", "base"):
            model = base if name == "base" else merged
            seconds[name].append(_generate_exactly(backend, [text], n_tokens, model).seconds)
    return {"base_p50_s": statistics.median(seconds["base"]), "merged_p50_s": statistics.median(seconds["merged"]),
            "prompts": len(texts)}
