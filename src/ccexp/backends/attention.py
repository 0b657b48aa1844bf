"""Variable-length causal attention for left-padded batches (``backend.attention=varlen``).

With padding in a batch, Hugging Face passes SDPA a 4-D boolean mask, and an explicit mask
makes the fused kernels compute every query/key block, the masked upper triangle included;
without one (``is_causal=True``) they skip it. Each row of a left-padded batch is causal
attention over its own suffix, so this runs SDPA once per row on that suffix with
``is_causal=True``: the same result for every real token (pad positions get zeros, which
no real token ever reads), a third less attention time on the CPU (``python -m ccexp.bench``)
and no B×T×T mask traffic. Any mask that is not exactly "causal + left padding" (a decode
step, right padding, sliding windows, a packed batch) falls back to HF's SDPA, unchanged.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "ccexp_varlen"

# The model builds one mask per forward and hands the same tensor to every layer, so the
# pattern check runs once per forward, not once per layer.
_checked: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)


def left_pad_starts(mask: torch.Tensor | None, q_len: int, k_len: int) -> torch.Tensor | None:
    """First real position of each row when ``mask`` is exactly causal + left padding, else None."""
    global _checked
    if mask is None or mask.dtype != torch.bool or mask.dim() != 4 or q_len != k_len or q_len < 2 or mask.shape[1] != 1:
        return None
    if _checked[0] is mask:
        return _checked[1]
    starts = k_len - mask[:, 0, -1, :].sum(-1)  # the last query sees every real key of its row
    # (and must be real itself: a right-padded row's last query sees nothing)
    pos = torch.arange(k_len, device=mask.device)
    causal = pos[None, :, None] >= pos[None, None, :]                   # [1, q, k]
    real = pos[None, None, :] >= starts[:, None, None]                   # [B, 1, k]
    real_query = pos[None, :, None] >= starts[:, None, None]             # [B, q, 1]
    expected = causal & real
    # Pad queries see nothing real; HF may let them see anything (to keep the softmax finite):
    # their outputs are never read by a real token, so only real query rows must match.
    ok = bool((starts < k_len).all()) and bool(((mask[:, 0] == expected) | ~real_query).all())
    _checked = (mask, starts if ok else None)
    return _checked[1]


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             is_causal=None, **kwargs):
    starts = left_pad_starts(attention_mask, query.shape[2], key.shape[2])
    if starts is None or dropout > 0 or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    batch, heads, length, dim = query.shape
    out = query.new_zeros(batch, length, heads, value.shape[-1])
    for row, start in enumerate(starts.tolist()):
        part = torch.nn.functional.scaled_dot_product_attention(
            query[row : row + 1, :, start:], key[row : row + 1, :, start:], value[row : row + 1, :, start:],
            is_causal=True, scale=scaling,
        )
        out[row, start:] = part[0].transpose(0, 1)
    return out, None


def register() -> str:
    """Make ``attn_implementation=ccexp_varlen`` known to transformers; returns the name."""
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
