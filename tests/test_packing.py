"""Packed batches (backend.packing): one row per batch, the prompt start its examples share
computed once. The loss and its gradients must be the padded batch's, the examples must never
see each other, and a model the packed attention would get wrong is refused."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, compose_cfg

from ccexp.config import ConfigError, validate
from ccexp.data.batching import Encoded, EncodedDataset, GroupedBatchSampler, collate, collate_packed, completion_nll
from ccexp.run import run

SYSTEM = "You are a contact-center analytics assistant. Answer with one JSON object."


def _example(user: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def _items(tokenizer):
    examples = [_example("Rate the agent. Transcript: the customer asked for a refund", '{"quality_score": 71}'),
                _example("Rate the agent. Transcript: a long call about a broken router " * 3, '{"quality_score": 5}'),
                _example("Rate the agent. Transcript: hello", '{"quality_score": 100, "effectiveness": "excellent"}')]
    return EncodedDataset(tokenizer, examples, 256).items


def test_packed_row_shares_the_prompt_start_and_keeps_each_answer(tokenizer):
    items = _items(tokenizer)
    batch = collate_packed(items)
    shared, lengths = batch["segments"]
    prompts = [item.input_ids[: len(item.input_ids) - item.n_answer] for item in items]
    assert tokenizer.decode(prompts[0][:shared]).endswith("Rate the agent. Transcript:")
    assert all(p[:shared] == prompts[0][:shared] for p in prompts) and shared < min(map(len, prompts))
    ids, positions = batch["input_ids"][0].tolist(), batch["position_ids"][0].tolist()
    assert len(ids) == shared + sum(lengths) == sum(len(i.input_ids) for i in items) - 2 * shared
    assert batch["n_tokens"] == sum(len(i.input_ids) for i in items)  # every example's tokens, as it has them
    start = shared
    for item, n in zip(items, lengths):  # each example: the shared start + its own tokens, positions as if alone
        assert ids[:shared] + ids[start : start + n] == item.input_ids
        assert positions[:shared] + positions[start : start + n] == list(range(len(item.input_ids)))
        start += n
    # The logits kept predict exactly the answer tokens, EOS included.
    assert [ids[k + 1] for k in batch["keep"].tolist()] == batch["labels"].tolist()
    assert batch["labels"].tolist() == [t for i in items for t in i.input_ids[-i.n_answer:]]
    assert collate_packed(items[:1])["segments"] == (0, (len(items[0].input_ids),))  # nothing to share


def _lora(tiny_dir, gradient_checkpointing: bool = False):
    from ccexp.methods import METHODS
    from ccexp.models import load_model

    rc = validate(compose_cfg("model=tiny", "method.dropout=0"))
    torch.manual_seed(0)
    model = METHODS["lora"](rc.method, rc.model, str(tiny_dir), torch.float32).wrap(
        load_model(tiny_dir, torch.float32, attention="varlen"))
    with torch.no_grad():  # LoRA's B starts at zero; random B gives every adapter weight a gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    if gradient_checkpointing:  # the recomputed layers must get the packed segments too
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.train()


def _loss_and_grads(model, batch):
    model.zero_grad()
    nll, count = completion_nll(model, batch)
    (nll / count).backward()
    return nll.detach(), int(count), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_packed_loss_and_gradients_equal_the_padded_batch(tiny_dir, tokenizer, gradient_checkpointing):
    model = _lora(tiny_dir, gradient_checkpointing)
    items = _items(tokenizer)
    padded = _loss_and_grads(model, collate(items, tokenizer.pad_token_id))
    packed = _loss_and_grads(model, collate_packed(items))
    assert padded[1] == packed[1]
    torch.testing.assert_close(packed[0], padded[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[2], padded[2], rtol=1e-4, atol=1e-6)
    assert padded[2].abs().max() > 1e-3


def test_packed_examples_do_not_see_each_other(tiny_dir, tokenizer):
    """Changing one example's own tokens leaves the other examples' logits as they were."""
    model = _lora(tiny_dir).eval()
    items = _items(tokenizer)
    batch = collate_packed(items)
    changed = Encoded([*items[1].input_ids[:-12], *([7] * 8), *items[1].input_ids[-4:]], items[1].n_answer, False)
    other = collate_packed([items[0], changed, items[2]])
    assert other["segments"] == batch["segments"]
    from ccexp.backends.attention import SEGMENTS

    def logits(b):
        with torch.no_grad():
            return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                         **{SEGMENTS: b["segments"]}).logits[0]

    a, b = logits(batch), logits(other)
    shared, (n0, n1, n2) = batch["segments"]
    first, second, third = slice(0, shared + n0), slice(shared + n0, shared + n0 + n1), slice(shared + n0 + n1, None)
    torch.testing.assert_close(a[first], b[first])
    torch.testing.assert_close(a[third], b[third])
    assert not torch.allclose(a[second][-4:], b[second][-4:])


def test_prompt_sort_keys_put_a_tasks_examples_together(tokenizer):
    examples = [_example(f"{task} Transcript: call number {i} " + "words " * (i % 5), '{"x": 1}')
                for i in range(24) for task in ("Rate the agent.", "Predict the churn risk.")]
    data = EncodedDataset(tokenizer, examples, 256)
    batches = list(GroupedBatchSampler(data.sort_keys("prompt"), 4, shuffle=True, seed=0, group=12))
    tasks = [{examples[i]["messages"][1]["content"].split(" Transcript")[0] for i in b} for b in batches]
    assert sorted(i for b in batches for i in b) == list(range(48))
    assert all(len(t) == 1 for t in tasks)  # each batch holds one task's examples
    shared = [collate_packed([data[i] for i in b])["segments"][0] for b in batches]
    alone = len(tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}], tokenize=False))
    assert min(shared) > 0 and max(shared) < alone + 40


# Prompts kept whole (tiny's 512 cuts most synthetic prompts, and a prompt whose kept start is
# cut at half the room shares less of it to pack once).
QUIET = (*FAST, "eval.generate_examples=0", "eval.baseline=false", "trainer.val_every_n_steps=1",
         "trainer.early_stopping_patience=0", "backend=cpu", "backend.precision=32-true", "method.dropout=0",
         "trainer.max_steps=4", "model.max_seq_len=1024")


def test_packed_training_keeps_the_loss_curve(tmp_path, monkeypatch):
    """Batches grouped by length, packed or not, are the same batches: without dropout, the packed
    run's validation losses are the padded run's up to float32 rounding, with the same tokens."""
    padded = run(compose_cfg(*QUIET, "backend.packing=false"), tmp_path / "padded")
    from ccexp.backends import attention

    calls = []
    original = attention.packed_attention
    monkeypatch.setattr(attention, "packed_attention", lambda *a, **kw: calls.append(a[-2]) or original(*a, **kw))
    packed = run(compose_cfg(*QUIET, "backend.packing=true"), tmp_path / "packed")
    assert calls and max(calls) > 0  # packed rows ran, sharing a prompt start
    a = [h["val_loss"] for h in padded["train/val_history"]]
    b = [h["val_loss"] for h in packed["train/val_history"]]
    assert len(a) == len(b) == 4 and a[-1] < a[0]
    assert b == pytest.approx(a, rel=1e-4)
    assert packed["train/tokens"] == padded["train/tokens"]
    assert packed["test/ppl"] == pytest.approx(padded["test/ppl"], rel=1e-4)  # evaluation's batches are packed too


def test_batches_grouped_by_prompt_train_and_count_every_token(tmp_path, monkeypatch):
    """The training sampler groups by what trainer.group_by names: the prompt's tokens, or its
    length (what each makes of a batch: test_prompt_sort_keys_put_a_tasks_examples_together);
    the run's tokens and learning are the same."""
    from ccexp.backends import lightning_modules

    grouped = []  # per training sampler (the one that shuffles): a prompt's tokens, or a length

    def sampler(keys, *args, shuffle, **kwargs):
        if shuffle:
            grouped.append("prompt" if isinstance(keys[0], list) else "length")
        return GroupedBatchSampler(keys, *args, shuffle=shuffle, **kwargs)

    monkeypatch.setattr(lightning_modules, "GroupedBatchSampler", sampler)
    by_length = run(compose_cfg(*QUIET), tmp_path / "length")
    assert grouped and set(grouped) == {"length"}
    grouped.clear()
    by_prompt = run(compose_cfg(*QUIET, "trainer.group_by=prompt"), tmp_path / "prompt")
    assert grouped and set(grouped) == {"prompt"}
    assert by_prompt["train/tokens"] == by_length["train/tokens"]  # the same examples, each counted whole
    losses = [h["val_loss"] for h in by_prompt["train/val_history"]]
    assert losses[-1] < losses[0]
    with pytest.raises(ConfigError, match=r"trainer.group_by: expected length or prompt, got 'task'"):
        validate(compose_cfg("model=tiny", "trainer.group_by=task"))


def test_packing_needs_varlen_attention():
    with pytest.raises(ConfigError, match=r"backend.packing: expected false with backend.attention=sdpa"):
        validate(compose_cfg("model=tiny", "backend=cpu", "backend.attention=sdpa"))
    validate(compose_cfg("model=tiny", "backend=cpu", "backend.attention=sdpa", "backend.packing=false"))


def test_packing_refuses_a_sliding_window_shorter_than_the_rows(tiny_dir):
    from transformers import MistralConfig

    from ccexp.backends.lightning import packing_applies

    rc = validate(compose_cfg("model=tiny", "backend=cpu", "model.max_seq_len=256"))
    model = torch.nn.Module()
    model.config = MistralConfig(sliding_window=128, num_hidden_layers=2)
    with pytest.raises(ConfigError, match=r"backend.packing=true: model tiny attends within a sliding window of 128"):
        packing_applies(rc, model)
    model.config = MistralConfig(sliding_window=4096, num_hidden_layers=2)
    assert packing_applies(rc, model)
    assert not packing_applies(validate(compose_cfg("model=tiny", "backend=cpu", "backend.packing=false")), model)


def test_a_mask_first_made_in_inference_trains(tiny_dir, tokenizer, monkeypatch):
    """Long rows go to SDPA with a cached bottom-right causal mask (every row on a GPU). One made
    first under inference_mode (validation, evaluation, an earlier job) is an inference tensor,
    and training then failed: "Inference tensors cannot be saved for backward"."""
    from ccexp.backends import attention

    monkeypatch.setattr(attention, "EXPLICIT_MAX_LEN", 0)  # every row fused, as on a GPU
    attention.causal_bias.cache_clear()
    model = _lora(tiny_dir)
    batch = collate_packed(_items(tokenizer))
    with torch.inference_mode():
        completion_nll(model, batch)
    loss, _, grads = _loss_and_grads(model, batch)
    assert torch.isfinite(loss) and grads.abs().max() > 1e-3
