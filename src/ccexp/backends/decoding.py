"""ccexp's greedy decoding: faster than ``generate``, with the same answers (in float32; bf16
rounds differently where the top tokens nearly tie, as any change of batch shape does).

Scoring one interaction as it ends is latency-bound: on a CPU a decode step reads every weight
for one token, so a step that checks ten tokens costs little more than a step that makes one.
Two levers, both leaving the greedy answer as it is:

- **n-gram drafts** (prompt-lookup / retrieval speculative decoding): analytics answers are
  mostly copied text — JSON keys, the category names and coaching phrases listed in the prompt,
  the answer templates seen in training. ``NgramDrafter`` proposes the tokens that followed the
  longest recent n-gram in this request (prompt + answer so far) or in the training answers;
  one forward pass scores them all, and the answer keeps the draft up to the first token greedy
  decoding would not have picked, plus the model's own token there. The output is the model's
  greedy answer (up to float rounding between a step of one and a step of several tokens).
- **a prompt-prefix cache** (``PrefixCache``): requests share the system prompt and the task
  instruction (~40% of an all-in-one prompt); their keys/values are reused, not recomputed.

Either way the keys/values grow in place (``GrowingLayer``): transformers' ``DynamicCache``
concatenates, which copies every layer's whole cache on every step.

Several prompts at once (``greedy_decode_batch``, no drafts: rows would accept different
numbers): one prompt pass over a packed row, the start all of them share once (the system
prompt; in an evaluation batch, one task's instruction too), then each prompt's own tokens,
unpadded (with another attention than ccexp's, a pass per node of a prefix tree over the
prompts); only the decode steps are batched.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ccexp.backends import attention
from ccexp.data.batching import common_prefix, common_prefix_all
from ccexp.methods.prompt_tuning import prompt_learning


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """The greedy token of each row of ``logits`` [..., vocab]: ``argmax`` over float32. On the
    CPU a bf16 ``argmax`` is a slow kernel: 670 µs for 8 rows of SmolLM2's 49k-token vocabulary
    against 220 µs cast and all (1.0 vs 0.2 ms for an 11-token draft check), 2% of a batch-of-8
    decode step. The cast is exact, and ties go to the first index either way, so the tokens are
    the same."""
    return logits.float().argmax(-1)


def _forward(net, cache: DynamicCache, **inputs):
    """One forward pass that reads and extends ``cache``. transformers 5.2x renamed the
    forward's ``past_key_values`` to ``cache`` (the old name goes in 5.40); pass the one this
    model's forward takes."""
    return net(**inputs, **{_cache_arg(type(_hf_model(net))): cache}, use_cache=True)


def _hf_model(net):
    return net.get_base_model() if hasattr(net, "get_base_model") else net  # peft wraps it


@functools.lru_cache(maxsize=None)
def _cache_arg(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are the filled part of a buffer of ``size`` positions
    (what the request needs at most; doubled if ever outgrown): a step writes its new tokens in
    place. ``DynamicLayer`` concatenates, a copy of the layer's whole cache per step: 24 ms of a
    175 ms 8-row decode step over ~650-token prompts in fp32 on 2 AVX2 cores. ``crop`` (rejected
    drafts) still works, as a shorter view; positions already handed out (a ``PrefixCache``
    entry holds the prompt's part) are never written again, since writes go after the current
    length and crops never reach the prompt."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.numel() else 0
        filled = length + key_states.shape[-2]
        if not self._filled_view() or filled > self._buffers[0].shape[-2]:
            shape = (*key_states.shape[:-2], self.size if filled <= self.size else 2 * filled, key_states.shape[-1])
            buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
            if length:  # what it held, in a buffer it outgrew or in tensors set from outside
                buffers[0][..., :length, :].copy_(self.keys)
                buffers[1][..., :length, :].copy_(self.values)
            self._buffers = buffers
        keys, values = self._buffers
        keys[..., length:filled, :].copy_(key_states)
        values[..., length:filled, :].copy_(value_states)
        self.keys, self.values = keys[..., :filled, :], values[..., :filled, :]
        return self.keys, self.values

    def _filled_view(self) -> bool:
        """Whether ``keys`` is still a leading part of the buffer (else it was replaced from outside)."""
        if self._buffers is None or self.keys.numel() == 0:
            return False
        buffer = self._buffers[0]
        return (self.keys.data_ptr() == buffer.data_ptr() and self.keys.stride() == buffer.stride()
                and self.keys.shape[:-2] == buffer.shape[:-2])


def growing_cache(config, size: int) -> DynamicCache:
    """The model's ``DynamicCache`` (its layer kinds), full-attention layers as ``GrowingLayer``s
    of ``size`` positions (sliding-window layers keep their own, which drop old positions)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(size) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class NgramDrafter:
    """Draft tokens from n-gram matches, the longest n-gram first, the request's own tokens
    (prompt + answer so far) before a corpus of typical answers; the first occurrence of an
    n-gram counts (a later one in a repetitive answer would leave little to draft after it)."""

    def __init__(self, corpus: Sequence[Sequence[int]], stop_id: int | None, max_ngram: int = 4,
                 max_corpus_tokens: int = 65_536):
        self.max_ngram, self.stop_id = max_ngram, stop_id
        # Answers of one task follow a template: a few thousand of them show every shape.
        self.corpus: list[int] = []
        for answer in corpus:
            if len(self.corpus) + len(answer) > max_corpus_tokens:
                break
            self.corpus.extend(answer)
        self.corpus_index = self._index(self.corpus, 0)

    def _index(self, tokens: Sequence[int], start: int, index: dict | None = None) -> dict:
        """n-gram -> position after it, for n-grams ending at positions ≥ ``start`` that have a
        continuation (a token after them)."""
        index = {} if index is None else index
        for end in range(max(start, 1), len(tokens)):
            for n in range(1, min(self.max_ngram, end) + 1):
                index.setdefault(tuple(tokens[end - n : end]), end)
        return index

    def start(self, prompt: Sequence[int]) -> "Draft":
        return Draft(self, list(prompt))


class Draft:
    """One request's running sequence and its n-gram index, extended as tokens are accepted."""

    def __init__(self, drafter: NgramDrafter, tokens: list[int]):
        self.drafter, self.tokens = drafter, tokens
        self.index = drafter._index(tokens, 0)

    def extend(self, new: Sequence[int]) -> None:
        start = len(self.tokens)
        self.tokens.extend(new)
        self.drafter._index(self.tokens, start, index=self.index)

    def propose(self, k: int) -> list[int]:
        d, tokens = self.drafter, self.tokens
        for n in range(min(d.max_ngram, len(tokens)), 0, -1):
            key = tuple(tokens[-n:])
            for source, index in ((tokens, self.index), (d.corpus, d.corpus_index)):
                at = index.get(key)
                if at is not None:
                    draft = source[at : at + k]
                    if d.stop_id in draft:  # nothing after the end of an answer
                        draft = draft[: draft.index(d.stop_id) + 1]
                    return draft
        return []


class PrefixCache:
    """Keys/values of the last few prompts, so a prompt sharing a prefix with one of them runs
    only its own suffix. Entries hold the prompt's positions of a request's cache, which
    decoding never writes again (``GrowingLayer`` writes after them), so they are shared, not
    copied, until a request extends them."""

    def __init__(self, entries: int = 4, min_shared: int = 16):
        self.entries, self.min_shared = entries, min_shared
        self._store: OrderedDict[tuple, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = OrderedDict()

    def clear(self) -> None:
        """After the weights change: cached keys/values belong to the old ones."""
        self._store.clear()

    def lookup(self, key: Hashable, prompt: Sequence[int], cache: DynamicCache) -> int:
        """Fill the empty ``cache`` with the longest prefix this prompt shares with a stored one
        (at most all but its last token, whose logits the caller needs); that prefix's length.
        ``key`` tells apart keys/values of different weights (the adapter on or off)."""
        best, best_len = None, 0
        for entry_key, (ids, _) in self._store.items():
            if entry_key[0] != key:
                continue
            shared = common_prefix(ids, prompt, len(prompt) - 1)
            if shared > best_len:
                best, best_len = entry_key, shared
        if best is None or best_len < self.min_shared:
            return 0
        self._store.move_to_end(best)
        for layer, (k, v) in enumerate(self._store[best][1]):
            cache.update(k[:, :, :best_len], v[:, :, :best_len], layer)
        return best_len

    def store(self, key: Hashable, prompt: Sequence[int], cache: DynamicCache) -> None:
        if any(layer.is_sliding for layer in cache.layers):
            return  # a sliding window keeps only recent keys: no prefix to cut from them
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self._store[(key, tuple(prompt))] = (list(prompt), layers)
        while len(self._store) > self.entries:
            self._store.popitem(last=False)


@torch.inference_mode()
def greedy_decode(net, prompt: Sequence[int], max_new_tokens: int, eos_id: int | None, *,
                  drafter: NgramDrafter | None = None, draft_tokens: int = 0,
                  prefix_cache: PrefixCache | None = None, cache_key=None,
                  teacher: Sequence[int] | None = None) -> tuple[list[int], float, dict]:
    """Greedy answer to one tokenized prompt: (new token ids up to and including EOS, seconds to
    the first new token, statistics). ``teacher`` (benchmarks only) stands in for the model's
    choices, so the cost of producing exactly that answer is measured whatever this model says."""
    if max_new_tokens < 1:
        return [], 0.0, {"forward_passes": 0, "prefix_tokens_reused": 0}
    start = time.perf_counter()
    device = next(net.parameters()).device
    # Sized for the whole request, so a prefix found in the cache is copied in once.
    cache = growing_cache(net.config, len(prompt) + max_new_tokens + draft_tokens)
    reused = prefix_cache.lookup(cache_key, prompt, cache) if prefix_cache else 0
    logits = _forward(net, cache, input_ids=torch.tensor([list(prompt[reused:])], device=device),
                      logits_to_keep=1).logits[0]
    if prefix_cache is not None:
        prefix_cache.store(cache_key, prompt, cache)
    choose = (lambda at, scores: list(teacher[at : at + len(scores)])) if teacher is not None else \
        (lambda at, scores: greedy_tokens(scores).tolist())
    answer = choose(0, logits)
    first_token = time.perf_counter() - start
    draft = drafter.start(list(prompt) + answer) if drafter is not None and draft_tokens > 0 else None
    steps = 1
    while answer[-1] != eos_id and len(answer) < max_new_tokens:
        proposal = draft.propose(min(draft_tokens, max_new_tokens - len(answer) - 1)) if draft else []
        tokens = [answer[-1], *proposal]
        logits = _forward(net, cache, input_ids=torch.tensor([tokens], device=device),
                          logits_to_keep=len(tokens)).logits[0]
        steps += 1
        picked = choose(len(answer), logits)  # picked[i]: the greedy token after tokens[i]
        kept = 0
        while kept < len(proposal) and kept < len(picked) - 1 and proposal[kept] == picked[kept]:
            kept += 1
        new = picked[: kept + 1]
        if eos_id in new:
            new = new[: new.index(eos_id) + 1]
        new = new[: max_new_tokens - len(answer)]
        if len(proposal) > kept:  # the rejected drafts' keys/values
            cache.crop(-(len(proposal) - kept))
        answer.extend(new)
        if draft:
            draft.extend(new)
    return answer, first_token, {"forward_passes": steps, "prefix_tokens_reused": reused}


def _packed_prompt_pass(net, prompts: Sequence[Sequence[int]], share_prefix: bool, min_shared: int, device):
    """Each prompt's keys/values (per layer) and last logits from one forward pass over a packed
    row, as training packs a batch (``attention.SEGMENTS``): the start all prompts share once
    (``min_shared`` tokens or more), then each prompt's own tokens with their own positions,
    attending to that start and to themselves. One pass instead of one per prompt: on 2 cores
    with AMX, 8 prompts of 550–700 own tokens after a 46-token start took 1.5–1.7 s instead of
    2.0–2.4 s (each pass reads every weight and runs SmolLM2's ~3,000 small ops; a longer row
    also runs the matmuls nearer the peak). A start only some prompts share (another task's
    instruction in a mixed batch) runs once per prompt: ~3% more tokens in a batch of 8
    mixed tasks, against 11 passes for the prefix tree."""
    lengths = [len(p) for p in prompts]
    shared = common_prefix_all(prompts, min(lengths) - 1) if share_prefix else 0
    shared = shared if shared >= min_shared else 0
    own = [n - shared for n in lengths]
    row = [*prompts[0][:shared], *(t for p in prompts for t in p[shared:])]
    positions = [*range(shared), *(i for n in lengths for i in range(shared, n))]
    ends = torch.tensor(own).cumsum(0)  # each prompt's end in the row, after the start
    cache = DynamicCache(config=net.config)
    logits = _forward(net, cache, input_ids=torch.tensor([row], device=device),
                      position_ids=torch.tensor([positions], device=device),
                      logits_to_keep=(shared + ends - 1).to(device), **{attention.SEGMENTS: (shared, own)}).logits[0]

    def part(t: torch.Tensor, i: int) -> torch.Tensor:  # prompt i's positions: the start, then its own
        stop = shared + int(ends[i])
        mine = t[:, :, stop - own[i] : stop]
        return torch.cat([t[:, :, :shared], mine], dim=2) if shared else mine

    layers = [([part(layer.keys, i) for i in range(len(prompts))], [part(layer.values, i) for i in range(len(prompts))])
              for layer in cache.layers]
    return layers, list(logits)


def _packs_prompts(net) -> bool:
    """One packed prompt pass needs ccexp's attention (it reads ``attention.SEGMENTS``), full
    attention in every layer (the packed kernel knows no window, and a sliding layer's cache
    would keep only the row's last window, not each prompt's positions), and the row as given
    (no virtual tokens the segments would not cover)."""
    return (getattr(net.config, "_attn_implementation", None) == attention.NAME and not prompt_learning(net)
            and not any(layer.is_sliding for layer in DynamicCache(config=net.config).layers))


def _prompt_passes(net, prompts: Sequence[Sequence[int]], share_prefix: bool, min_shared: int, device):
    """Each prompt's keys/values and last logits, every start that several prompts share
    computed once: a prefix tree over the prompts in token order. The start all of them share
    (the system prompt), then within it the start each group shares (a task's instruction, ~100–170
    tokens of a ~650-token prompt), and so on down, wherever at least ``min_shared`` more tokens
    are shared; a prompt's own tokens run last. Sliding-window layers keep only recent keys, so
    there nothing is shared."""
    caches: list = [None] * len(prompts)
    first: list = [None] * len(prompts)
    if any(layer.is_sliding for layer in DynamicCache(config=net.config).layers):
        share_prefix = False

    def branch(base: DynamicCache | None) -> DynamicCache:  # a new cache holding base's positions
        cache = DynamicCache(config=net.config)
        for i, layer in enumerate(base.layers if base is not None else []):
            cache.update(layer.keys, layer.values, i)
        return cache

    def run(cache: DynamicCache, tokens: Sequence[int]) -> torch.Tensor:
        return _forward(net, cache, input_ids=torch.tensor([list(tokens)], device=device), logits_to_keep=1).logits[0, -1]

    def own(row: int, base: DynamicCache | None, done: int) -> None:
        caches[row] = branch(base)
        first[row] = run(caches[row], prompts[row][done:])

    def fill(rows: list[int], base: DynamicCache | None, done: int) -> None:
        # rows: two or more prompts in token order whose first ``done`` tokens are base's positions
        adjacent = [common_prefix(prompts[a], prompts[b], min(len(prompts[a]), len(prompts[b])) - 1)
                    for a, b in zip(rows, rows[1:])]
        if min(adjacent) - done >= min_shared:  # in token order, what all share is the least neighbours share
            base = branch(base)
            run(base, prompts[rows[0]][done : min(adjacent)])
            done = min(adjacent)
        # Runs of neighbours sharing min_shared more tokens: each a strict part of rows (all of
        # them sharing that much more would contradict ``done``), so the recursion ends.
        groups = [[rows[0]]]
        for row, shared in zip(rows[1:], adjacent):
            if shared >= done + min_shared:
                groups[-1].append(row)
            else:
                groups.append([row])
        for group in groups:
            if len(group) > 1:
                fill(group, base, done)
            else:
                own(group[0], base, done)

    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    if share_prefix and len(order) > 1:
        fill(order, None, 0)
    else:
        for row in order:
            own(row, None, 0)
    return caches, first


def drafter_from_answers(tokenizer, answers: Sequence[str]) -> NgramDrafter:
    """A drafter over answer texts as the model writes them: each followed by EOS."""
    texts = [answer + tokenizer.eos_token for answer in answers]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return NgramDrafter(ids, tokenizer.eos_token_id)


@torch.inference_mode()
def greedy_decode_batch(net, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None, *,
                        share_prefix: bool = True, min_shared: int = 16) -> tuple[list[list[int]], float]:
    """Greedy answers to several tokenized prompts: (new token ids per prompt, up to and
    including EOS; seconds to the first new tokens). ``generate`` runs a left-padded batch
    through the prompt pass, so every row pays for the longest prompt and for the starts the
    prompts share (system prompt, task instruction). Here the start they all share runs once and
    each prompt's own tokens unpadded after it, in one packed pass (``_packed_prompt_pass``; with
    another attention, one pass per node of a prefix tree, ``_prompt_passes``), and the
    keys/values are then left-padded into one batch for the decode steps."""
    if max_new_tokens < 1:
        return [[] for _ in prompts], 0.0
    start = time.perf_counter()
    device = next(net.parameters()).device
    lengths = [len(p) for p in prompts]
    if _packs_prompts(net):
        layers, first = _packed_prompt_pass(net, prompts, share_prefix, min_shared, device)
    else:
        caches, first = _prompt_passes(net, prompts, share_prefix, min_shared, device)
        layers = [([c.layers[i].keys for c in caches], [c.layers[i].values for c in caches])
                  for i in range(len(caches[0].layers))]
        del caches
    longest = max(lengths)

    def left_padded(tensors: list[torch.Tensor]) -> torch.Tensor:  # [1, heads, n, dim] each -> [B, heads, longest, dim]
        return torch.cat([torch.nn.functional.pad(t, (0, 0, longest - n, 0)) for t, n in zip(tensors, lengths)])

    batch = growing_cache(net.config, longest + max_new_tokens)
    for i, (keys, values) in enumerate(layers):
        batch.update(left_padded(keys), left_padded(values), i)
    del layers
    mask = torch.tensor([[0] * (longest - n) + [1] * n for n in lengths], device=device)
    positions = torch.tensor(lengths, device=device)[:, None]
    tokens = greedy_tokens(torch.stack(first))
    answers = [[t] for t in tokens.tolist()]  # reading them back waits for a GPU to finish
    first_token = time.perf_counter() - start
    done = [t == eos_id for t in tokens.tolist()]
    for _ in range(max_new_tokens - 1):
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        logits = _forward(net, batch, input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                          logits_to_keep=1).logits[:, -1]
        positions = positions + 1
        tokens = greedy_tokens(logits)
        for row, token in enumerate(tokens.tolist()):
            if not done[row]:
                answers[row].append(token)
                done[row] = token == eos_id
    return answers, first_token
