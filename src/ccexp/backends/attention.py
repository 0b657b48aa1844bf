"""Variable-length causal attention for left-padded batches (``backend.attention=varlen``).

With padding in a batch, Hugging Face passes SDPA a 4-D boolean mask, and an explicit mask
makes the fused kernels compute every query/key block, the masked upper triangle included;
without one (``is_causal=True``) they skip it. Each row of a left-padded batch is causal
attention over its own suffix, so this attends per row over that suffix, causally, with no
mask (SDPA's ``is_causal=True``; on the CPU the explicit kernel below): the same result for
every real token (pad positions get zeros, which no real token ever reads), a third less
attention time on the CPU (``python -m ccexp.bench``) and no B×T×T mask traffic. Any mask that
is not exactly "causal + left padding" (a decode step, right padding, sliding windows, HF's own
packed format) falls back to HF's SDPA, unchanged.

ccexp's packed batches (``backend.packing``) are one row: the prompt start the batch's
examples share, then each example's own tokens; the model call names the segments
(``SEGMENTS``), and each example attends to the shared start and to its own tokens only.

On the CPU, two kernels, picked by shape, because its fused (flash) kernel runs at ~40 GFLOP/s
where a plain matmul runs at ~350 (GPUs keep SDPA per row: their fused kernels are fast, and
their memory stays linear in L):
- rows up to ``EXPLICIT_MAX_LEN`` tokens: scores = Q·Kᵀ as one matmul per KV-head group (no
  repeated K/V), masked softmax, ·V — the numerics of transformers' own "eager" attention (bf16
  scores, softmax computed in fp32 internally), in query blocks of ``BLOCK_ROWS`` (fp32:
  ``FP32_BLOCK_ROWS``) or more that each stop at their own last key. It computes more scores
  than the flash kernel (2/3 to 3/4 of the L×L square against its ~1/2) at ~8× its rate (bf16):
  a 735-token row's forward+backward takes ~16 ms instead of ~24 ms. The price is the
  probabilities kept for backward (up to 9 MB per layer per 700-token row in bf16), which is why
  longer rows go to the fused kernel, whose memory is linear in L. Training runs it through
  ``ExplicitRows``, whose backward adds each block's gradients in place (autograd's slicing
  would pass over whole-row gradients once per block).
- a prompt's suffix over a cached prefix (queries = the last q of k positions, as when a
  single request reuses the KV of the prompt it shares with the previous one): the same
  per-row kernel, each query block against the keys up to its own last position.
- decode steps (a few new queries against the KV cache, no gradient): the same explicit
  matmuls with the cache's padding mask; the fused kernel spends ~0.6 ms per call on a single
  query, ~17 ms of a 55 ms SmolLM2 decode step.

Where the CPU has AMX tiles, its fused kernel runs its products on them in bf16 and is the
faster one for inference (prompt passes and decode steps, ``fused_inference``); training keeps
the explicit kernel there too, as the fused kernel's backward is the slower one.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "ccexp_varlen"
# The model-call keyword that marks a packed row, (shared prefix length, each example's own
# length): transformers hands extra keywords through every layer to the attention function
# (gradient checkpointing's recomputation included).
SEGMENTS = "packed_segments"
# Longest row (tokens) for the explicit-matmul kernel; longer rows use the fused SDPA kernel,
# whose memory does not grow with L². 1024 tokens keep the kept probabilities at ≤ 19 MB per
# layer per row for a 9-head model.
EXPLICIT_MAX_LEN = 1024
# Causal rows are split into query blocks of at least this many rows, each block against the
# keys up to its end, so the upper triangle's blocks are skipped: 2 blocks compute 3/4 of the
# L×L scores, 3 blocks 2/3. Smaller blocks cost more in overhead than they save (forward +
# backward of one 9-head row here: 735 tokens 18.6 → 16.4 ms with 3 blocks, 1,000 tokens
# 51 → 25 ms; 300 tokens: no gain). Measured in bf16 on an AVX512-BF16 EPYC.
BLOCK_ROWS = 256
# fp32 (CPUs without bf16 dot products): fp32 scores are twice the bytes, and the score matmuls
# (inner dimension 64) are bound by writing them, so blocks that stay in cache win: forward +
# backward of one 9-head row on an AVX2 EPYC, 64-row vs 256-row blocks: 300 tokens 10.7 → 7.5
# ms, 700 tokens 40 → 29 ms, 1,000 tokens 62 → 58 ms (whole training steps: within noise); a
# 550-token prompt suffix over 942 keys 15.6 → 12.4 ms.
FP32_BLOCK_ROWS = 64
# Most new tokens per row that the explicit decode path takes (decode steps are 1).
DECODE_MAX_QUERIES = 16


@functools.lru_cache(maxsize=None)
def _cpu_has_amx() -> bool:
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent from older builds
    # The fused decode step shares K/V across query groups with SDPA's enable_gqa (torch 2.5+).
    return bool(is_amx and is_amx()) and torch.torch_version.TorchVersion(torch.__version__) >= (2, 5)


def fused_inference(dtype: torch.dtype) -> bool:
    """Whether inference on the CPU (no gradient: generation, validation) takes the fused SDPA
    kernel instead of the explicit one: in bf16 on CPUs with AMX tiles, where the flash kernel's
    products run on the tiles. On a 2-core Xeon with AMX, SmolLM2's shapes: a 735-token row's
    attention forward 4.0 → 2.0 ms, a 527-token prompt suffix over 918 keys 3.8 → 2.1 ms; in the
    model, a prompt pass 20% faster and an 11-token decode step over ~920 cached keys 49 → 38 ms
    (a batch-of-8 step 69 → 47 ms). Its backward is the slower one there (forward + backward of
    the 735-token row 9.7 vs 16.0 ms; a packed 4-example row 40 vs 92 ms), so training keeps the
    explicit kernel. Without AMX (AVX512-BF16 or AVX2 EPYCs) the flash kernel runs at ~40 GFLOP/s
    against ~350 for a plain matmul, and the explicit kernel serves everything."""
    return dtype == torch.bfloat16 and _cpu_has_amx()


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in: under CPU autocast, the autocast dtype."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype


# The model builds one mask per forward and hands the same tensor to every layer, so the
# pattern check runs once per forward, not once per layer.
# The result is a Python list, so on a GPU the layers do not each wait to read it back.
_checked: tuple[torch.Tensor | None, list[int] | None] = (None, None)


def left_pad_starts(mask: torch.Tensor | None, q_len: int, k_len: int) -> list[int] | None:
    """First real key position of each row when ``mask`` is exactly causal + left padding, the
    queries being the last ``q_len`` of the ``k_len`` positions (all of them, or a prompt's
    suffix after a cached prefix); else None."""
    global _checked
    if mask is None or mask.dtype != torch.bool or mask.dim() != 4 or q_len > k_len or q_len < 2 or mask.shape[1] != 1:
        return None
    if _checked[0] is mask:
        return _checked[1]
    starts = k_len - mask[:, 0, -1, :].sum(-1)  # the last query sees every real key of its row
    # (and must be real itself: a right-padded row's last query sees nothing)
    pos = torch.arange(k_len, device=mask.device)
    qpos = pos[k_len - q_len :]
    causal = qpos[None, :, None] >= pos[None, None, :]                   # [1, q, k]
    real = pos[None, None, :] >= starts[:, None, None]                   # [B, 1, k]
    real_query = qpos[None, :, None] >= starts[:, None, None]            # [B, q, 1]
    expected = causal & real
    # Pad queries see nothing real; HF may let them see anything (to keep the softmax finite):
    # their outputs are never read by a real token, so only real query rows must match.
    ok = bool((starts < k_len).all()) and bool(((mask[:, 0] == expected) | ~real_query).all())
    _checked = (mask, starts.tolist() if ok else None)
    return _checked[1]


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             is_causal=None, **kwargs):
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    segments = kwargs.get(SEGMENTS)
    if segments is not None:  # a packed row: the batch's shared prompt start, then each example
        if dropout > 0:  # no fallback could keep the examples apart (packing_applies refuses known configs)
            from ccexp.config import ConfigError

            raise ConfigError(f"backend.packing=true: this model's attention has dropout {dropout}; "
                              "set backend.packing=false")
        return packed_attention(query, key, value, scaling, *segments), None
    if dropout > 0 or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    q_len, k_len = query.shape[2], key.shape[2]
    # The explicit kernel is for CPUs: GPU flash kernels are fast, and their memory is linear in L.
    if query.device.type == "cpu" and q_len < k_len and q_len <= DECODE_MAX_QUERIES and not torch.is_grad_enabled():
        mask = decode_mask(attention_mask, q_len, k_len)
        if mask is not False:
            if fused_inference(_compute_dtype(query)):
                # Unlike the explicit kernel's masked_fill, SDPA's boolean mask does not hide a
                # non-finite key at a masked position; ccexp's loops pad keys/values with zeros,
                # and a padded prompt pass writes zeros for its pad queries (``attend``).
                return torch.nn.functional.scaled_dot_product_attention(
                    query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True).transpose(1, 2), None
            return explicit_attention(query, key, value, scaling, mask), None
    starts = left_pad_starts(attention_mask, q_len, k_len)
    if starts is None and attention_mask is None and 1 < q_len == k_len and getattr(module, "is_causal", True):
        # No padding anywhere: HF drops the mask (SDPA's is_causal), and every row starts at 0.
        starts = [0] * query.shape[0]
    if starts is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    offset = k_len - q_len  # cached positions before the first query
    # Row r's real queries (from its first real one) are the last of its real keys (from ``start``).
    segments = [Segment(row, max(start - offset, 0), q_len, start, k_len) for row, start in enumerate(starts)]
    return attend(query, key, value, scaling, segments), None


class Segment(NamedTuple):
    """Queries ``query[row, :, q_start:q_end]``: the last positions of the keys
    ``key[row, :, k_start:k_end]``, which they attend to causally; they also see every key before
    ``shared`` (a packed row's prompt start)."""
    row: int
    q_start: int
    q_end: int
    k_start: int
    k_end: int
    shared: int = 0


def packed_attention(query, key, value, scaling: float, prefix: int, lengths: Sequence[int]) -> torch.Tensor:
    """Attention for one packed row (``data/batching.py``, ``collate_packed``): a prompt start of
    ``prefix`` tokens that every example in the batch shares, then each example's own tokens,
    ``lengths`` of them. The start attends causally to itself; each example's tokens attend to
    the start and causally to their own, never to another example's. That is exactly what each
    example would see in a row of its own, so losses and gradients are those of the padded
    batch, with the start computed once instead of once per example. Returns [1, T, heads, dim]."""
    segments = [Segment(0, 0, prefix, 0, prefix)] if prefix else []
    start = prefix
    for n in lengths:
        segments.append(Segment(0, start, start + n, start, start + n, prefix))
        start += n
    return attend(query, key, value, scaling, segments)


def attend(query, key, value, scaling: float, segments: Sequence[Segment]) -> torch.Tensor:
    """Causal attention of each segment's queries -> [B, q_len, heads, dim] (zeros for queries no
    segment covers: pad positions, which no real token reads). On the CPU the explicit kernel
    (``ExplicitRows``), unless a segment has more than ``EXPLICIT_MAX_LEN`` keys or this is
    inference where the fused kernel is the faster (``fused_inference``); else fused SDPA per
    segment."""
    if (query.device.type == "cpu" and all(s.shared + s.k_end - s.k_start <= EXPLICIT_MAX_LEN for s in segments)
            and (torch.is_grad_enabled() or not fused_inference(_compute_dtype(query)))):
        return explicit_rows(query, key, value, scaling, segments)
    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[-1])
    groups = query.shape[1] // key.shape[1]
    for s in segments:
        q = query[s.row : s.row + 1, :, s.q_start : s.q_end]
        k, v = _segment_kv(key, s)[None], _segment_kv(value, s)[None]
        n_q, n_k = q.shape[2], k.shape[2]
        # SDPA's is_causal aligns the triangle top-left: right only when q and k are the same positions.
        bias = None if n_q == n_k else causal_bias(n_q, n_k, q.dtype, q.device)
        out[s.row, s.q_start : s.q_end] = torch.nn.functional.scaled_dot_product_attention(
            q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias, is_causal=bias is None,
            scale=scaling)[0].transpose(0, 1)
    return out


def explicit_rows(query, key, value, scaling: float, segments: Sequence[Segment]) -> torch.Tensor:
    """``ExplicitRows`` in the compute dtype: under CPU autocast, the autocast dtype (scores in
    bf16, as HF's eager attention has them), and autocast off inside, so that the backward,
    which runs outside autocast, computes in the same dtype."""
    dtype = _compute_dtype(query)
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    with torch.autocast("cpu", enabled=False):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
            return ExplicitRows.apply(query, key, value, scaling, tuple(segments))
        return _rows_forward(query, key, value, scaling, segments, keep=False)[0]


def _query_blocks(n_q: int, dtype: torch.dtype) -> list[int]:
    """Block edges for ``n_q`` causal queries: blocks of at least ``BLOCK_ROWS`` (fp32:
    ``FP32_BLOCK_ROWS``) rows."""
    blocks = max(1, n_q // (FP32_BLOCK_ROWS if dtype == torch.float32 else BLOCK_ROWS))
    return [n_q * i // blocks for i in range(blocks + 1)]


def _segment_kv(t: torch.Tensor, s: Segment) -> torch.Tensor:
    """The keys (or values) segment ``s`` attends to, [kv_heads, n_k, dim]: the shared start,
    then its own."""
    own = t[s.row, :, s.k_start : s.k_end]
    return torch.cat([t[s.row, :, : s.shared], own], dim=1) if s.shared else own


def _rows_forward(q, k, v, scaling: float, segments: Sequence[Segment], keep: bool):
    """The explicit kernel's forward: per segment, query blocks against the keys up to each
    block's last position; the scores as one matmul per KV-head group (no repeated K/V).
    Returns the output and, if ``keep``, what the backward needs (each segment's keys, values and
    per-block probabilities)."""
    heads, dim = q.shape[1], q.shape[-1]
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    out = q.new_zeros(q.shape[0], q.shape[2], heads, v.shape[-1])
    saved: list[torch.Tensor] = []
    for s in segments:
        ks, vs = _segment_kv(k, s), _segment_kv(v, s)
        n_q, n_k = s.q_end - s.q_start, ks.shape[1]
        if keep:
            saved += [ks, vs]
        edges = _query_blocks(n_q, q.dtype)
        for a, b in zip(edges, edges[1:]):
            rows, keys = b - a, n_k - n_q + b  # this block's queries are the last of these keys
            qb = (q[s.row, :, s.q_start + a : s.q_start + b] * scaling).reshape(kv_heads, groups * rows, dim)
            scores = torch.bmm(qb, ks[:, :keys].transpose(1, 2)).view(kv_heads, groups, rows, keys)
            # Only the block's last ``rows`` keys have any hidden from some of its queries: the
            # causal triangle's bias is added there, in place (a broadcast add costs a seventh of a
            # broadcast masked_fill), and the keys before it, which every query sees, are left alone.
            scores[..., keys - rows :].add_(causal_bias(rows, rows, scores.dtype, q.device))
            probs = torch.softmax(scores, dim=-1)
            probs = probs.view(kv_heads, groups * rows, keys)
            block = torch.bmm(probs, vs[:, :keys]).view(heads, rows, -1)
            out[s.row, s.q_start + a : s.q_start + b] = block.transpose(0, 1)
            if keep:
                saved.append(probs)
    return out, saved


class ExplicitRows(torch.autograd.Function):
    """The explicit kernel with its own backward. Through autograd, every block's slice of Q, K
    and V would get back a zero gradient the size of the whole tensor with the block's part
    written in, and those would be summed: for a 700-token row in 11 blocks, ~20 passes over
    the row's gradients per layer. Here each block's gradient is added where it belongs (a
    packed 4-example row's attention, forward + backward on 2 AVX2 cores: 230 → 150 ms per
    layer). Every tensor kept goes through ``save_for_backward``, so gradient checkpointing can
    drop and recompute it."""

    @staticmethod
    def forward(ctx, q, k, v, scaling: float, segments: tuple[Segment, ...]):
        out, saved = _rows_forward(q, k, v, scaling, segments, keep=True)
        ctx.save_for_backward(q, *saved)
        ctx.scaling, ctx.segments, ctx.kv_shapes = scaling, segments, (k.shape, v.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, *saved = ctx.saved_tensors
        heads, dim = q.shape[1], q.shape[-1]
        k_shape, v_shape = ctx.kv_shapes
        kv_heads, groups, scaling = k_shape[1], heads // k_shape[1], ctx.scaling
        grad_out = grad_out.to(q.dtype)
        dq, dk, dv = torch.zeros_like(q), q.new_zeros(k_shape), q.new_zeros(v_shape)
        at = 0
        for s in ctx.segments:
            ks, vs = saved[at], saved[at + 1]
            n_q, n_k = s.q_end - s.q_start, ks.shape[1]
            edges = _query_blocks(n_q, q.dtype)
            probs_of = saved[at + 2 : at + 1 + len(edges)]
            at += 1 + len(edges)
            dks, dvs = torch.zeros_like(ks), torch.zeros_like(vs)
            for a, b, probs in zip(edges, edges[1:], probs_of):
                rows, keys = b - a, n_k - n_q + b
                queries = slice(s.q_start + a, s.q_start + b)
                do = grad_out[s.row, queries].transpose(0, 1).reshape(kv_heads, groups * rows, -1)
                dvs[:, :keys].baddbmm_(probs.transpose(1, 2), do)
                dscores = torch._softmax_backward_data(torch.bmm(do, vs[:, :keys].transpose(1, 2)), probs, -1,
                                                       probs.dtype)
                dq[s.row, :, queries] = torch.bmm(dscores, ks[:, :keys]).view(heads, rows, dim).mul_(scaling)
                qb = (q[s.row, :, queries] * scaling).reshape(kv_heads, groups * rows, dim)
                dks[:, :keys].baddbmm_(dscores.transpose(1, 2), qb)
            for grad, part in ((dk, dks), (dv, dvs)):
                grad[s.row, :, : s.shared] += part[:, : s.shared]
                grad[s.row, :, s.k_start : s.k_end] += part[:, s.shared :]
        return dq, dk, dv, None, None


def decode_mask(mask: torch.Tensor | None, q_len: int, k_len: int):
    """The keys each new query may see, as a [B, 1, q, k] boolean mask; None when it sees every
    key (one query, no padding: HF passes no mask then); False when the mask is of a kind this
    path does not take (float masks, or none for several queries, where causality is implied)."""
    if mask is None:
        return None if q_len == 1 else False
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != (q_len, k_len):
        return False
    return mask


def explicit_attention(query, key, value, scaling: float, mask: torch.Tensor | None = None):
    """softmax(Q·Kᵀ·scaling, masked)·V with plain matmuls, grouped-query heads sharing their K/V
    without copies, for inference (decode steps); returns [B, q, heads, dim] like HF's attention
    functions. ``mask``: boolean [B, 1, q, k] (True = may attend), None = every key."""
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # [B, kv, groups·q, dim]: each KV head's query group as one matrix, so one matmul per KV head.
    q = (query * scaling).reshape(batch, kv_heads, groups * q_len, dim)
    if key.dtype == torch.float32 or key.is_contiguous():
        scores = torch.matmul(q, key.transpose(-1, -2))
    else:
        # ccexp's loops hand over the filled part of a longer buffer (``decoding.GrowingLayer``),
        # whose batch stride is not n·dim, and oneDNN copies a bf16 Kᵀ so strided, transposed,
        # before Q·Kᵀ: ~480 µs of a ~580 µs batch-of-8 decode-step attention over ~820 keys (2-core
        # Zen 5). K·Qᵀ reads the strided keys as they lie: ~290 µs, the same answers (an A/B over 8
        # prompts × 32 tokens; test against float64). Contiguous keys (``generate``'s concatenated
        # cache) and fp32 keep Q·Kᵀ, the faster there (bf16, batch of 8: 56 vs 82 µs).
        scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).contiguous()
    scores = scores.view(batch, kv_heads, groups, q_len, k_len)
    if mask is not None:  # masked_fill, unlike a bias, also hides non-finite pad keys
        scores = scores.masked_fill_(~mask[:, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).view(batch, kv_heads, groups * q_len, k_len)
    out = torch.matmul(probs, value).view(batch, heads, q_len, value.shape[-1])
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=64)
def causal_bias(q_len: int, k_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0 where query i (the last ``q_len`` of ``k_len`` positions) may see key j, -inf above.
    Made outside inference mode whatever the caller's: the cached mask of a first call under
    ``inference_mode`` (validation) would be an inference tensor, which SDPA's backward cannot save."""
    with torch.inference_mode(False):
        hidden = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu_(k_len - q_len + 1)
        return torch.zeros(q_len, k_len, dtype=dtype, device=device).masked_fill_(hidden, float("-inf"))


def register() -> str:
    """Make ``attn_implementation=ccexp_varlen`` known to transformers; returns the name."""
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
