"""Varlen attention and ccexp's explicit CPU kernel against PyTorch's SDPA: the same logits and
greedy generations on the tiny model, the same values and gradients for packed rows, query
blocks, a prompt suffix over a cached prefix and decode steps; where the fused kernel serves
instead (long rows, inference on AMX), the same results."""

from __future__ import annotations

import pytest
import torch


def _left_padded(batch: int = 3, length: int = 24):
    ids = torch.randint(5, 1000, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    mask[1, :2] = 0
    return ids, mask


def test_varlen_attention_equals_sdpa_on_real_tokens(tiny_dir):
    """Exact up to float rounding: same logits on every real token, same greedy generation."""
    from ccexp.backends import attention
    from ccexp.models import load_model

    plain = load_model(tiny_dir, torch.float32, attention="sdpa").eval()
    varlen = load_model(tiny_dir, torch.float32, attention="varlen").eval()
    ids, mask = _left_padded()
    with torch.no_grad():
        a = plain(input_ids=ids, attention_mask=mask).logits
        b = varlen(input_ids=ids, attention_mask=mask).logits
    assert attention._checked[1] == [7, 2, 0]  # the per-row path ran, with these starts
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)
    for model in (plain, varlen):
        model.config.use_cache = True
        model.generation_config.pad_token_id = 0
    with torch.no_grad():
        gen_a = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        gen_b = varlen.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(gen_a, gen_b)


def test_unpadded_batches_take_the_explicit_path_too(tiny_dir, monkeypatch):
    """No padding: HF passes no mask at all (SDPA's is_causal); the rows still go through the
    matmul kernel, with SDPA's logits."""
    from ccexp.backends import attention
    from ccexp.models import load_model

    plain = load_model(tiny_dir, torch.float32, attention="sdpa").eval()
    varlen = load_model(tiny_dir, torch.float32, attention="varlen").eval()
    ids = torch.randint(5, 1000, (2, 20), generator=torch.Generator().manual_seed(1))
    calls = []
    original = attention._rows_forward
    monkeypatch.setattr(attention, "_rows_forward", lambda *a, **kw: calls.append(a[4]) or original(*a, **kw))
    with torch.no_grad():
        a = plain(input_ids=ids).logits
        b = varlen(input_ids=ids).logits
    assert len(calls) == plain.config.num_hidden_layers  # one per layer, a segment per row
    assert calls[0] == [attention.Segment(0, 0, 20, 0, 20), attention.Segment(1, 0, 20, 0, 20)]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_explicit_kernel_only_on_the_cpu(monkeypatch, device):
    """Other devices (a GPU; here the meta device stands in) keep SDPA per row and per step."""
    from ccexp.backends import attention

    calls = []
    for name in ("explicit_attention", "_rows_forward"):
        original = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _f=original, _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    q, k, v = (t.to(device) for t in _qkv(2, 6, 2, 5, 5))
    with torch.no_grad():
        out, _ = attention.varlen_attention_forward(module, q, k, v, None, scaling=0.3)  # two unpadded rows
        step, _ = attention.varlen_attention_forward(module, q[:, :, -1:], k, v, None, scaling=0.3)  # a decode step
    assert out.shape == (2, 5, 6, 8) and step.shape == (2, 1, 6, 8)
    assert calls == (["_rows_forward", "explicit_attention"] if device == "cpu" else [])


def test_head_input_gets_row_major_strides():
    from ccexp.backends.speedups import row_major

    hidden = torch.randn(1, 9, 4)
    last = hidden[:, -1:, :]  # "contiguous" to PyTorch, yet a batch stride of 36
    assert last.is_contiguous() and last.stride() == (36, 4, 1)
    assert row_major(last).stride() == (4, 4, 1) and torch.equal(row_major(last), last)
    assert row_major(torch.randn(2, 3, 4)[:, 1:]).stride() == (8, 4, 1)


def test_varlen_attention_falls_back_on_any_other_mask():
    from ccexp.backends.attention import left_pad_starts

    length = 6
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    left = causal.clone()[None, None].repeat(2, 1, 1, 1)
    left[0, 0, :, :2] = False
    assert left_pad_starts(left, length, length) == [2, 0]
    right = causal.clone()[None, None].repeat(2, 1, 1, 1)
    right[0, 0, :, 4:] = False  # right padding: real queries would lose nothing, keys differ
    right[0, 0, 4:, :] = False
    assert left_pad_starts(right, length, length) is None
    window = causal.clone()
    window[5, 0] = False  # a sliding window
    assert left_pad_starts(window[None, None], length, length) is None
    assert left_pad_starts(left[:, :, -1:], 1, length) is None  # a decode step
    assert left_pad_starts(left[:, :, 2:], length - 2, length) == [2, 0]  # a suffix after a cache
    assert left_pad_starts(None, length, length) is None


def _qkv(batch, heads, kv_heads, q_len, k_len, dim=8, grad=False):
    g = torch.Generator().manual_seed(0)
    make = lambda h, n: torch.randn(batch, h, n, dim, generator=g, dtype=torch.float64, requires_grad=grad)  # noqa: E731
    return make(heads, q_len), make(kv_heads, k_len), make(kv_heads, k_len)


def _reference(q, k, v, s, scaling):
    """SDPA with repeated K/V on one segment's queries and keys (shared start + own)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from ccexp.backends.attention import causal_bias

    qs = q[s.row : s.row + 1, :, s.q_start : s.q_end]
    ks, vs = (torch.cat([t[s.row : s.row + 1, :, : s.shared], t[s.row : s.row + 1, :, s.k_start : s.k_end]], dim=2)
              for t in (k, v))
    groups = q.shape[1] // k.shape[1]
    bias = causal_bias(qs.shape[2], ks.shape[2], q.dtype, q.device)
    return torch.nn.functional.scaled_dot_product_attention(qs, repeat_kv(ks, groups), repeat_kv(vs, groups),
                                                            attn_mask=bias, scale=scaling)[0].transpose(0, 1)


@pytest.mark.parametrize("block_rows", [3, 64])
def test_explicit_rows_equal_sdpa_values_and_gradients(monkeypatch, block_rows):
    """The explicit kernel and its own backward (grouped KV heads, query blocks, a shared prompt
    start, a cached offset) against SDPA per segment: outputs and all three gradients, in
    float64; and torch's numerical gradient check."""
    from ccexp.backends import attention
    from ccexp.backends.attention import Segment

    monkeypatch.setattr(attention, "BLOCK_ROWS", block_rows)
    q, k, v = _qkv(2, 6, 2, 13, 16, grad=True)
    segments = [Segment(0, 0, 4, 0, 4), Segment(0, 4, 9, 4, 9, shared=4), Segment(0, 9, 13, 9, 13, shared=4),
                Segment(1, 2, 13, 5, 16)]  # row 1: 11 queries, the last of keys 5..15; queries 0-1 are pads
    out = attention.attend(q, k, v, 0.3, segments)
    assert out.shape == (2, 13, 6, 8) and not out[1, :2].any()
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    refs = [_reference(q, k, v, s, 0.3) for s in segments]
    ref_grads = torch.autograd.grad(sum(r.square().sum() for r in refs), (q, k, v))
    for s, ref in zip(segments, refs):
        assert torch.allclose(out[s.row, s.q_start : s.q_end], ref, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-10)
    small = _qkv(1, 4, 2, 7, 7, dim=3, grad=True)
    assert torch.autograd.gradcheck(lambda *t: attention.ExplicitRows.apply(
        *t, 0.5, (Segment(0, 0, 3, 0, 3), Segment(0, 3, 7, 3, 7, shared=3))), small)


def test_explicit_rows_compute_in_the_autocast_dtype():
    """Under CPU bf16 autocast the kernel computes in bf16, forward and backward (which runs
    outside autocast), close to the float32 result; its gradients come back in the inputs' dtype."""
    from ccexp.backends import attention
    from ccexp.backends.attention import Segment

    q, k, v = (t.float().detach().requires_grad_() for t in _qkv(1, 6, 2, 10, 10))
    segments = [Segment(0, 0, 10, 0, 10)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention.attend(q, k, v, 0.3, segments)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    ref = attention.attend(q, k, v, 0.3, segments)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert torch.allclose(out.float(), ref, atol=0.05)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=0.2, rtol=0.05)


def test_causal_query_blocks_give_the_same_values_and_gradients(monkeypatch):
    """Rows split into query blocks (each against the keys up to its end), with left padding:
    the real rows' outputs and gradients equal SDPA's on the unpadded rows."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from ccexp.backends import attention

    monkeypatch.setattr(attention, "BLOCK_ROWS", 3)  # 11 real tokens: 3 blocks; 13: 4 blocks
    module = torch.nn.Module()
    module.num_key_value_groups = 3
    q, k, v = _qkv(2, 6, 2, 13, 13, grad=True)
    mask = torch.ones(13, 13, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    mask[0, ..., :2] = False
    out, _ = attention.varlen_attention_forward(module, q, k, v, mask, scaling=0.3)
    assert attention._checked[1] == [2, 0]
    loss = out[0, 2:].square().sum() + out[1].square().sum()
    grads = torch.autograd.grad(loss, (q, k, v))
    for row, start in ((0, 2), (1, 0)):
        qr, kr, vr = (t[row : row + 1, :, start:].detach().requires_grad_() for t in (q, k, v))
        ref = torch.nn.functional.scaled_dot_product_attention(qr, repeat_kv(kr, 3), repeat_kv(vr, 3), is_causal=True,
                                                               scale=0.3)
        assert torch.allclose(out[row, start:], ref[0].transpose(0, 1), atol=1e-12)
        ref_grads = torch.autograd.grad(ref.square().sum(), (qr, kr, vr))
        for got, want in zip(grads, ref_grads):
            assert torch.allclose(got[row : row + 1, :, start:], want, atol=1e-10)


@pytest.mark.parametrize("max_len", [64, 8])
def test_prompt_suffix_over_a_cached_prefix(monkeypatch, max_len):
    """Queries = the last 9 of 14 positions (a prompt's suffix after its cached prefix), row 0
    left-padded into the suffix: per row through the blocked kernel (or SDPA with a
    bottom-right causal bias for long rows), equal to HF's SDPA with the full mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ccexp.backends import attention

    monkeypatch.setattr(attention, "BLOCK_ROWS", 3)
    monkeypatch.setattr(attention, "EXPLICIT_MAX_LEN", max_len)
    monkeypatch.setattr(attention, "DECODE_MAX_QUERIES", 4)  # 9 queries: not a decode step
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    q, k, v = _qkv(2, 6, 2, 9, 14)
    mask = torch.ones(14, 14, dtype=torch.bool).tril()[None, None, 5:].repeat(2, 1, 1, 1)
    mask[0, ..., :7] = False  # row 0's first real token is position 7: its first 2 queries are pads
    with torch.no_grad():
        ours, _ = attention.varlen_attention_forward(module, q, k, v, mask, scaling=0.3)
    assert attention._checked[1] == [7, 0]
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)
    assert torch.allclose(ours[0, 2:], theirs[0, 2:], atol=1e-12)
    assert torch.allclose(ours[1], theirs[1], atol=1e-12)


def test_decode_steps_take_the_explicit_path_with_the_padding_mask():
    """A decode step (one new query per row against the cache, left padding in row 0) gives what
    HF's SDPA gives, through the explicit kernel, not the fallback."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ccexp.backends import attention

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    q, k, v = _qkv(2, 6, 2, 1, 9)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False
    calls = []
    original = attention.explicit_attention
    try:
        attention.explicit_attention = lambda *a, **kw: calls.append(1) or original(*a, **kw)
        with torch.no_grad():
            ours, _ = attention.varlen_attention_forward(module, q, k, v, mask, scaling=0.35)
            unpadded, _ = attention.varlen_attention_forward(module, q[1:], k[1:], v[1:], None, scaling=0.35)
    finally:
        attention.explicit_attention = original
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.35)
    assert calls == [1, 1]
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert torch.allclose(unpadded, theirs[1:], atol=1e-12)


@pytest.mark.parametrize("q_len", [1, 4])
def test_bf16_decode_step_over_a_growing_buffer_matches_float64_sdpa(q_len):
    """In bf16 a decode step computes its scores as K·Qᵀ (the cache's keys are a leading view of
    a longer buffer, ``GrowingLayer``, which Q·Kᵀ would copy transposed first): the result is
    SDPA's in float64 up to bf16 rounding, padding mask included, and the same as on contiguous keys."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ccexp.backends import attention

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    q, k_buffer, v_buffer = _qkv(2, 6, 2, q_len, 40, dim=16)
    # The filled part of each buffer, as GrowingLayer hands it out.
    bf16 = [q.bfloat16(), k_buffer.bfloat16()[:, :, :29], v_buffer.bfloat16()[:, :, :29]]
    mask = torch.ones(2, 1, q_len, 29, dtype=torch.bool).tril_(29 - q_len)
    mask[0, ..., :5] = False
    assert not bf16[1].is_contiguous()
    with torch.no_grad():
        ours = attention.explicit_attention(*bf16, 0.25, mask)
        contiguous = attention.explicit_attention(*(t.contiguous() for t in bf16), 0.25, mask)
    theirs, _ = sdpa_attention_forward(module, *(t.double() for t in bf16), mask, scaling=0.25)
    assert ours.dtype == torch.bfloat16
    assert torch.allclose(ours.double(), theirs, atol=2e-2)
    assert torch.allclose(ours, contiguous, atol=1e-2)


def test_long_rows_use_the_fused_kernel_with_the_same_result(tiny_dir, monkeypatch):
    """Rows over EXPLICIT_MAX_LEN go to SDPA (memory linear in length): same logits either way."""
    from ccexp.backends import attention
    from ccexp.models import load_model

    model = load_model(tiny_dir, torch.float32, attention="varlen").eval()
    ids, mask = _left_padded()
    with torch.no_grad():
        explicit = model(input_ids=ids, attention_mask=mask).logits
        monkeypatch.setattr(attention, "EXPLICIT_MAX_LEN", 20)  # rows of 22 and 24 tokens go fused, 17 stays
        fused = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(explicit[real], fused[real], atol=1e-5)


@pytest.mark.parametrize("amx", [True, False])
def test_amx_inference_takes_the_fused_kernel_with_the_same_result(monkeypatch, amx):
    """Where the fused kernel is the faster for inference (bf16 on AMX; forced here for float64),
    a packed row, a prompt suffix over a cached prefix and a decode step with padding all go to
    SDPA, with the explicit kernel's results; with a gradient the explicit kernel stays."""
    from ccexp.backends import attention

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    calls = []
    for name in ("explicit_attention", "_rows_forward"):
        original = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _f=original, _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    monkeypatch.setattr(attention, "DECODE_MAX_QUERIES", 4)
    q, k, v = _qkv(2, 6, 2, 9, 14)
    suffix_mask = torch.ones(14, 14, dtype=torch.bool).tril()[None, None, 5:].repeat(2, 1, 1, 1)
    suffix_mask[0, ..., :7] = False
    step_mask = torch.ones(2, 1, 1, 14, dtype=torch.bool)
    step_mask[0, ..., :4] = False
    pq, pk, pv = _qkv(1, 6, 2, 17, 17)

    def outputs():
        with torch.no_grad():
            packed = attention.attend(pq, pk, pv, 0.3, [attention.Segment(0, 0, 5, 0, 5),
                                                        attention.Segment(0, 5, 11, 5, 11, 5),
                                                        attention.Segment(0, 11, 17, 11, 17, 5)])
            suffix, _ = attention.varlen_attention_forward(module, q, k, v, suffix_mask, scaling=0.3)
            step, _ = attention.varlen_attention_forward(module, q[:, :, -1:], k, v, step_mask, scaling=0.3)
        return packed, suffix[:, 2:], step

    explicit = outputs()
    assert calls == ["_rows_forward", "_rows_forward", "explicit_attention"]
    calls.clear()
    monkeypatch.setattr(attention, "_cpu_has_amx", lambda: amx)
    assert attention.fused_inference(torch.bfloat16) is amx and not attention.fused_inference(torch.float32)
    monkeypatch.setattr(attention, "fused_inference", lambda dtype: amx)
    fused = outputs()
    assert calls == ([] if amx else ["_rows_forward", "_rows_forward", "explicit_attention"])
    for got, want in zip(fused, explicit):
        assert torch.allclose(got, want, atol=1e-12)
    gq, gk, gv = _qkv(1, 6, 2, 7, 7, grad=True)
    attention.attend(gq, gk, gv, 0.3, [attention.Segment(0, 0, 7, 0, 7)]).sum().backward()
    assert calls[-1] == "_rows_forward" and gq.grad is not None


@pytest.mark.skipif(not __import__("ccexp.backends.attention", fromlist=["x"])._cpu_has_amx(),
                    reason="the fused kernel serves inference only where the CPU has AMX")
@pytest.mark.parametrize("autocast", [True, False])
def test_fused_inference_in_bf16_is_close_to_the_explicit_kernel(monkeypatch, autocast):
    """The real condition on an AMX CPU: bf16 (fp32 inputs under bf16 autocast, or bf16 inputs),
    peaked scores (64-wide heads, unit-variance q/k). A packed row, a prompt suffix over a cached
    prefix with padding and a padded decode step through the fused kernel stay within bf16
    rounding of the explicit kernel's outputs."""
    from ccexp.backends import attention

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    monkeypatch.setattr(attention, "DECODE_MAX_QUERIES", 4)
    g = torch.Generator().manual_seed(3)
    dtype = torch.float32 if autocast else torch.bfloat16
    make = lambda b, h, n: torch.randn(b, h, n, 64, generator=g).to(dtype)  # noqa: E731
    q, k, v = make(2, 6, 9), make(2, 2, 14), make(2, 2, 14)
    pq, pk, pv = make(1, 6, 40), make(1, 2, 40), make(1, 2, 40)
    suffix_mask = torch.ones(14, 14, dtype=torch.bool).tril()[None, None, 5:].repeat(2, 1, 1, 1)
    suffix_mask[0, ..., :7] = False
    step_mask = torch.ones(2, 1, 1, 14, dtype=torch.bool)
    step_mask[0, ..., :4] = False
    segments = [attention.Segment(0, 0, 10, 0, 10), attention.Segment(0, 10, 25, 10, 25, 10),
                attention.Segment(0, 25, 40, 25, 40, 10)]

    def outputs(fused: bool):
        monkeypatch.setattr(attention, "fused_inference", lambda d: fused and d == torch.bfloat16)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            packed = attention.attend(pq, pk, pv, 0.125, segments)
            suffix, _ = attention.varlen_attention_forward(module, q, k, v, suffix_mask, scaling=0.125)
            step, _ = attention.varlen_attention_forward(module, q[:, :, -1:], k, v, step_mask, scaling=0.125)
        return packed, suffix[:, 2:], step

    for got, want in zip(outputs(True), outputs(False)):
        assert torch.allclose(got.float(), want.float(), atol=0.03, rtol=0.02)
