"""Each speed-up keeps results equivalent: the optimised path's loss curve matches the plain one
on the tiny model within a tolerance (bf16 rounding), and the benchmark's sides do the same work."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, compose_cfg

from ccexp.run import run

QUIET = (*FAST, "eval.generate_examples=0", "eval.baseline=false", "trainer.val_every_n_steps=1",
         "trainer.early_stopping_patience=0", "backend=cpu", "backend.precision=bf16-mixed")


def test_bf16_base_weights_match_fp32_weights_under_autocast(tmp_path):
    plain = run(compose_cfg(*QUIET, "backend.base_dtype=float32"), tmp_path / "fp32")
    fast = run(compose_cfg(*QUIET, "backend.base_dtype=bfloat16"), tmp_path / "bf16")
    a = [h["val_loss"] for h in plain["train/val_history"]]
    b = [h["val_loss"] for h in fast["train/val_history"]]
    assert len(a) == len(b) == 4
    assert b == pytest.approx(a, rel=2e-3)
    assert a[-1] < a[0] and b[-1] < b[0]  # both still learn


def _loss_curve(tmp_path, name, *overrides):
    result = run(compose_cfg(*QUIET, "trainer.max_steps=6", *overrides), tmp_path / name)
    return [h["val_loss"] for h in result["train/val_history"]]


def test_varlen_attention_and_shared_dropout_keep_the_loss_curve(tmp_path, monkeypatch):
    """The defaults (varlen attention, one q/k/v dropout mask, contiguous head input, no LoRA input
    casts) against transformers' SDPA with peft's independent masks and none of the rewrites, on
    the same padded batches (packing: tests/test_packing.py)."""
    fast = _loss_curve(tmp_path, "fast", "backend.packing=false")
    import ccexp.backends.speedups as speedups

    monkeypatch.setattr(speedups, "apply", lambda *args, **kwargs: None)  # none of the rewrites
    plain = _loss_curve(tmp_path, "plain", "backend.attention=sdpa", "backend.packing=false",
                        "method.shared_dropout=false")
    assert len(fast) == len(plain) == 6
    # Different dropout masks (shared vs independent) and bf16 rounding: close, not equal.
    assert fast == pytest.approx(plain, rel=0.02)
    assert fast[-1] < fast[0] and plain[-1] < plain[0]


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


def test_keep_mask_has_the_dropout_rate_in_every_field_and_follows_the_seed():
    from ccexp.backends.speedups import keep_mask

    torch.manual_seed(3)
    a = keep_mask(torch.Size([300, 701]), 0.05, torch.device("cpu"), torch.bfloat16)
    torch.manual_seed(3)
    b = keep_mask(torch.Size([300, 701]), 0.05, torch.device("cpu"), torch.bfloat16)
    assert a.shape == (300, 701) and a.dtype == torch.bfloat16
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    dropped = a == 0
    assert abs(dropped.float().mean().item() - 0.05) < 0.003  # 210,300 draws: ±6 standard errors
    # Each int64 draw gives four elements, one per 16-bit field: each field has the rate (a field
    # short of random bits, like the top one of a 63-bit draw, would drop nothing or twice as much).
    fields = dropped.reshape(-1)[:210_000].view(-1, 4).float().mean(0)
    assert ((fields - 0.05).abs() < 0.006).all(), fields
    half = keep_mask(torch.Size([100_000]), 0.5, "cpu", torch.float32)
    assert abs(half.mean().item() - 0.5) < 0.01
    assert keep_mask(torch.Size([1000]), 0.0, "cpu", torch.float32).eq(1).all()
    assert keep_mask(torch.Size([1000]), 1.0, "cpu", torch.float32).eq(0).all()


def test_shared_dropout_reuses_its_mask_only_for_the_same_tensor():
    from ccexp.backends.speedups import SharedDropout

    torch.manual_seed(0)
    drop = SharedDropout(0.5).train()
    x = torch.ones(64, 64)
    first, again, other = drop(x), drop(x), drop(x.clone())
    assert first is again
    assert not torch.equal(first, other)
    assert set(first.unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept values scaled by 1/(1-p)
    assert 0.4 < (first == 0).float().mean() < 0.6
    assert drop.eval()(x) is x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_shared_dropout_values_and_gradients_are_bitwise_those_of_scaling_then_zeroing(dtype):
    """One addcmul each way (ScaledKeep) instead of a product with the scale and masked_fill_ (a
    scalar loop on the CPU): the same values and input gradients, bit for bit, the scale rounded
    once as the product with a Python float rounds it."""
    from ccexp.backends.speedups import SharedDropout, keep_mask

    x = torch.randn(37, 29, dtype=dtype, requires_grad=True)
    upstream = torch.randn(37, 29, dtype=dtype)
    torch.manual_seed(5)
    ours = SharedDropout(0.1).train()(x)
    (ours * upstream).sum().backward()
    ours_grad, x.grad = x.grad, None
    torch.manual_seed(5)  # the same draws
    dropped = keep_mask(x.shape, 0.1, "cpu", torch.bool).logical_not()
    reference = (x * (1 / 0.9)).masked_fill(dropped, 0)
    (reference * upstream).sum().backward()
    assert dropped.any() and torch.equal(ours, reference) and torch.equal(ours_grad, x.grad)


def _lora_pair(tiny_dir):
    """The tiny model with a LoRA adapter (B not zero, so the update counts), twice: peft's
    layers, and a copy with ``fuse_lora_update``."""
    import copy

    from peft import LoraConfig, get_peft_model

    from ccexp.backends import speedups
    from ccexp.models import load_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    plain = get_peft_model(load_model(tiny_dir, torch.float32), config)
    fused = copy.deepcopy(plain)
    assert speedups.fuse_lora_update(fused) == 3 * fused.config.num_hidden_layers
    return plain, fused


def _logits_and_grads(model, ids, autocast: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    logits.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return logits.detach().float(), grads


def _relative_errors(grads: dict, reference: dict) -> list[float]:
    return [float((grads[n] - reference[n]).norm() / reference[n].norm()) for n in reference]


def test_fused_lora_update_gives_peft_values_and_gradients(tiny_dir):
    from peft.tuners.lora import Linear

    plain, fused = _lora_pair(tiny_dir)
    ids = torch.randint(5, 1000, (2, 21), generator=torch.Generator().manual_seed(1))
    a, reference = _logits_and_grads(plain, ids, autocast=False)
    b, grads = _logits_and_grads(fused, ids, autocast=False)
    assert torch.allclose(a, b, atol=1e-5)  # fp32: the same sums, up to float rounding
    assert grads.keys() == reference.keys()
    assert max(_relative_errors(grads, reference)) < 1e-4
    # bf16 autocast: peft rounds the update, its scaled copy and the sum; addmm rounds the sum
    # once. Against the fp32 gradients the fused path is no further off than peft's own.
    a16, plain16 = _logits_and_grads(plain, ids, autocast=True)
    b16, fused16 = _logits_and_grads(fused, ids, autocast=True)
    assert torch.allclose(a16, b16, atol=0.05, rtol=0.05)
    plain_error = sum(_relative_errors(plain16, reference)) / len(reference)
    fused_error = sum(_relative_errors(fused16, reference)) / len(reference)
    assert fused_error <= 1.1 * plain_error, (fused_error, plain_error)
    layer = fused.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, Linear) and type(layer) is not Linear
    assert fused.state_dict().keys() == plain.state_dict().keys()


def test_fused_lora_update_leaves_peft_to_its_own_cases(tiny_dir, tmp_path):
    """Adapter off, merged, saved and loaded back, copied by pickle: as peft has it."""
    import pickle

    from peft import PeftModel

    from ccexp.models import load_model

    plain, fused = _lora_pair(tiny_dir)
    ids = torch.randint(5, 1000, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with plain.disable_adapter(), fused.disable_adapter():
            assert torch.equal(plain(input_ids=ids).logits, fused(input_ids=ids).logits)
        adapted = fused(input_ids=ids).logits
        assert torch.allclose(pickle.loads(pickle.dumps(fused))(input_ids=ids).logits, adapted)
        fused.save_pretrained(tmp_path)  # the saved adapter, on peft's own layers
        loaded = PeftModel.from_pretrained(load_model(tiny_dir, torch.float32), tmp_path)
        assert torch.allclose(loaded(input_ids=ids).logits, adapted, atol=1e-5)
        fused.merge_adapter()
        assert torch.allclose(fused(input_ids=ids).logits, adapted, atol=1e-4)


def test_gradient_checkpointing_keeps_the_loss_curve(tmp_path):
    """Recomputed layers draw the same dropout masks (RNG state kept), so the curve is the same."""
    plain = _loss_curve(tmp_path, "plain")
    checkpointed = _loss_curve(tmp_path, "gc", "method.gradient_checkpointing=true")
    assert checkpointed == pytest.approx(plain, rel=1e-3)


def test_release_freed_memory_sets_glibcs_threshold_in_its_own_process():
    """In a child: the setting is per process and would slow the rest of the suite."""
    import subprocess
    import sys

    code = "from ccexp.backends.speedups import release_freed_memory as r; print(r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("True" if sys.platform == "linux" else "False")


@pytest.mark.parametrize("keep", [True, False])
def test_freed_memory_is_kept_for_the_next_tensors_unless_released(tmp_path, keep):
    """A CPU backend keeps freed heap memory for reuse (``keep_freed_memory``): a prompt pass's
    layers free and allocate tensors of a few MB each, and must not fault their pages in again
    layer after layer. With ``backend.release_freed_memory`` every big tensor gets pages of its
    own, which do fault. In a child: the settings are per process."""
    import subprocess
    import sys

    code = f"""
import resource, torch
from conftest import FAST, compose_cfg
from ccexp.backends.lightning import TorchBackend
from ccexp.config import validate
from ccexp.models import resolve_model_dir
rc = validate(compose_cfg(*FAST, "backend=cpu", "backend.release_freed_memory={str(not keep).lower()}"))
TorchBackend(rc, "cpu", resolve_model_dir(rc.model))
def layer():  # transient tensors of 8 MB, all freed before the next layer
    x = torch.ones(2 << 20)
    return float(torch.softmax((x * 2) + x, 0)[0])
for _ in range(3):
    layer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    layer()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    if sys.platform != "linux":
        pytest.skip("glibc's malloc settings")
    # On 4 KB pages, as glibc's thresholds are what is tested: on huge pages (ccexp's default, below)
    # a released 8 MB tensor faults 4 pages in, not 2,048.
    env = {**__import__("os").environ, "THP_MEM_ALLOC_ENABLE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=__import__("pathlib").Path(__file__).parent).stdout.strip().splitlines()[-1]
    faults = int(out)
    # Each layer's 32 MB is 8,192 pages: released (or with glibc's own thresholds) 61–82k faults in 10 layers. Kept,
    # 0 but for an occasional 8 MB block that another thread's allocation moved (2,048 in some layers of some runs).
    assert faults < 2 * 8192 if keep else faults > 4 * 8192, faults


@pytest.mark.parametrize("setting,expected", [(None, "1"), ("0", "0")])
def test_import_ccexp_puts_big_tensors_on_huge_pages_unless_told_not_to(setting, expected):
    """``import ccexp`` sets THP_MEM_ALLOC_ENABLE=1 (benchmarks/huge_pages.py) unless the environment
    says otherwise, and PyTorch then backs a big tensor with huge pages where the kernel allows
    them. In a child: PyTorch reads the setting once, at its first allocation."""
    import os
    import subprocess
    import sys

    from ccexp.backends.speedups import huge_pages_mode

    if sys.platform != "linux":
        pytest.skip("transparent huge pages are a Linux feature")
    code = """
import os, ccexp, torch
x = torch.ones(16 << 20)  # 64 MB
huge = next(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages"))
print(os.environ["THP_MEM_ALLOC_ENABLE"], huge)
"""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    value, huge_kb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    env=env).stdout.split()
    assert value == expected
    if huge_pages_mode() == "madvise":  # "always" gives huge pages either way, "never" none
        assert (int(huge_kb) >= 32 << 10) == (expected == "1"), huge_kb


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


needs_cxx = pytest.mark.skipif(__import__("ccexp.backends.speedups", fromlist=["x"]).cpp_compiler() is None,
                               reason="torch.compile's CPU code needs a C++ compiler")


@needs_cxx
def test_compiled_norms_and_mlps_keep_the_loss_curve(tmp_path):
    """backend.compile=true: inductor's fused RMS norms and SwiGLU against the eager modules, on
    the same packed batches with the same dropout masks."""
    eager = run(compose_cfg(*QUIET, "trainer.max_steps=6", "backend.compile=false"), tmp_path / "eager")
    compiled = run(compose_cfg(*QUIET, "trainer.max_steps=6", "backend.compile=true"), tmp_path / "compiled")
    assert eager["train/compiled"] == 0.0 and compiled["train/compiled"] == 1.0
    curves = [[h["val_loss"] for h in r["train/val_history"]] for r in (eager, compiled)]
    assert len(curves[1]) == 6 and curves[1] == pytest.approx(curves[0], rel=2e-3)  # bf16: fused vs stepwise rounding


def test_compiled_modules_keep_their_own_forward_without_grad(tiny_dir):
    """Evaluation and generation (no grad) run the eager forward: the same logits, bit for bit,
    and nothing compiled; with autograd on, the compiled one runs."""
    from ccexp.backends import speedups
    from ccexp.models import load_model

    model = load_model(tiny_dir, torch.float32).eval()
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    layers = model.config.num_hidden_layers
    assert speedups.compile_for_training(model) == 3 * layers + 1  # two norms and the MLP per layer, the final norm
    assert speedups.compile_for_training(model) == 0  # not wrapped twice
    calls = []
    for module in model.modules():
        if isinstance(module.forward, speedups.TrainingCompiled):
            wrapped = module.forward

            def record(*args, _eager=wrapped.eager, **kwargs):
                calls.append(1)
                return _eager(*args, **kwargs)

            wrapped.compiled = record
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert not calls
    model(input_ids=ids).logits.sum().backward()
    assert len(calls) == 3 * layers + 1


def _backend(*overrides):
    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", *overrides))
    return TorchBackend(rc, "cpu", resolve_model_dir(rc.model))


def test_compile_auto_waits_for_runs_long_enough_to_pay(monkeypatch):
    from ccexp.backends import speedups

    compiled = []
    monkeypatch.setattr(speedups, "compile_for_training", lambda model: compiled.append(model))
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: "g++")
    backend = _backend()  # backend.compile=auto
    assert not backend.compile_for_training(speedups.COMPILE_MIN_STEPS - 1) and not compiled
    assert backend.compile_for_training(speedups.COMPILE_MIN_STEPS) and compiled == [backend.model]
    assert _backend("backend.compile=true").compile_for_training(1)
    assert not _backend("backend.compile=false").compile_for_training(10_000)
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: None)
    assert not backend.compile_for_training(10_000)  # auto: no compiler, no compiling


def test_compile_auto_leaves_4bit_bases_eager(monkeypatch):
    from ccexp.backends import speedups

    monkeypatch.setattr(speedups, "cpp_compiler", lambda: "g++")
    assert not _backend("method=qlora").compile_for_training(10_000)


def test_compile_settings_are_checked_in_one_line(monkeypatch):
    from ccexp.backends import speedups
    from ccexp.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^backend.compile: expected auto, true or false"):
        validate(compose_cfg(*FAST, "backend.compile=sometimes"))
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: None)
    with pytest.raises(ConfigError, match=r"^backend.compile: true needs a C\+\+ compiler"):
        _backend("backend.compile=true")
