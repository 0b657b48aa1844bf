"""Single-request decoding (n-gram drafts, prompt-prefix cache) gives generate's greedy answer,
in fewer forward passes when the drafts are right."""

from __future__ import annotations

import pytest
import torch

from ccexp.backends.decoding import GrowingLayer, NgramDrafter, PrefixCache, greedy_decode, greedy_decode_batch

EOS = 2


def test_drafter_prefers_the_longest_match_and_the_request_over_the_corpus():
    drafter = NgramDrafter([[7, 8, 9, 10, EOS], [5, 6, 11, 12, EOS]], stop_id=EOS, max_ngram=3)
    # The request ends in "5 6": the corpus knows "5 6 -> 11 12 EOS"; the request's own
    # earlier "5 6 -> 40 41" is as long a match and wins (this conversation's own words).
    assert drafter.start([1, 5, 6, 40, 41, 3, 5, 6]).propose(4) == [40, 41, 3, 5]
    # Only the corpus has "8 9": its continuation, cut after EOS (the next answer is unrelated).
    assert drafter.start([1, 8, 9]).propose(6) == [10, EOS]
    # A longer corpus match beats a shorter request match.
    assert drafter.start([6, 30, 5, 6]).propose(2) == [11, 12]
    assert drafter.start([99, 98]).propose(3) == []
    request = drafter.start([4, 3])
    request.extend([77, 4])  # the index follows accepted tokens: "3 77" is new
    assert request.propose(2) == [3, 77]
    request.extend([3])
    assert request.propose(2) == [77, 4]


@pytest.fixture(scope="module")
def model(tiny_dir):
    from ccexp.models import load_model

    net = load_model(tiny_dir, torch.float32, attention="varlen").eval()
    net.generation_config.pad_token_id = 0
    return net


def _generate(model, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=n, do_sample=False, use_cache=True,
                             eos_token_id=EOS)
    return out[0, len(prompt):].tolist()


def _prompts():
    g = torch.Generator().manual_seed(4)
    shared = torch.randint(5, 500, (30,), generator=g).tolist()  # a "system prompt" both share
    return [shared + torch.randint(5, 500, (n,), generator=g).tolist() for n in (9, 14, 3)]


@pytest.mark.parametrize("draft_tokens", [0, 6])
def test_greedy_decode_equals_generate(model, draft_tokens):
    """float32, so one-token and several-token steps round alike: the very same tokens, whether
    the drafts came from the corpus (right) or not, with the prompt prefix reused or not."""
    prompts = _prompts()
    expected = [_generate(model, p, 24) for p in prompts]
    # The corpus holds the first answer: its drafts are right for prompt 0, arbitrary for the rest.
    drafter = NgramDrafter([expected[0]], stop_id=EOS)
    cache = PrefixCache()
    for i, (prompt, want) in enumerate(zip(prompts, expected)):
        got, first_s, stats = greedy_decode(model, prompt, 24, EOS, drafter=drafter, draft_tokens=draft_tokens,
                                            prefix_cache=cache, cache_key=True)
        assert got == want
        assert first_s > 0
        assert stats["prefix_tokens_reused"] == (0 if i == 0 else 30)
        if draft_tokens == 0:
            assert stats["forward_passes"] == len(want)
    again = greedy_decode(model, prompts[0], 24, EOS, drafter=drafter, draft_tokens=draft_tokens)
    assert again[0] == expected[0]
    if draft_tokens:  # every draft right: ~len/7 passes instead of len
        assert again[2]["forward_passes"] <= len(expected[0]) // 3


@pytest.mark.parametrize("share", [True, False])
def test_batched_decode_equals_generate(model, share):
    """Three prompts of different lengths sharing a 30-token start: computed once (or not),
    each prompt's own tokens unpadded, decoded as a left-padded batch: generate's answers (EOS
    ends a row; the others go on)."""
    prompts = _prompts()
    expected = []
    for prompt in prompts:
        answer = _generate(model, prompt, 24)
        expected.append(answer[: answer.index(EOS) + 1] if EOS in answer else answer)
    got, first_s = greedy_decode_batch(model, prompts, 24, EOS, share_prefix=share)
    assert got == expected and first_s > 0
    forced, _ = greedy_decode_batch(model, prompts, 24, None, share_prefix=share)  # no EOS: exactly 24 each
    assert [len(a) for a in forced] == [24, 24, 24]
    assert greedy_decode_batch(model, prompts, 0, EOS)[0] == [[], [], []]


@pytest.mark.parametrize("attention", ["varlen", "sdpa"])
def test_batched_decode_computes_the_shared_start_once(tiny_dir, attention, monkeypatch):
    """Prompts as a mixed batch has them: one system prompt, two task instructions two prompts
    each, and a prompt of a third task; the answers are generate's either way. With ccexp's
    attention, one packed prompt pass: the system prompt once, then each prompt's remainder
    (its instruction included). With another attention, a prefix tree: every start once, a
    pass per node."""
    from ccexp.backends import decoding
    from ccexp.models import load_model

    model = load_model(tiny_dir, torch.float32, attention=attention).eval()
    model.generation_config.pad_token_id = 0
    g = torch.Generator().manual_seed(7)

    def tokens(n: int) -> list[int]:
        return torch.randint(5, 500, (n,), generator=g).tolist()

    system, task_a, task_b = tokens(30), tokens(20), tokens(18)
    prompts = [system + task_a + tokens(9), system + task_b + tokens(6), system + task_a + tokens(4),
               system + tokens(7), system + task_b + tokens(11)]
    expected = [answer[: answer.index(EOS) + 1] if EOS in answer else answer
                for answer in (_generate(model, prompt, 8) for prompt in prompts)]
    computed = []
    original = decoding._forward
    monkeypatch.setattr(decoding, "_forward", lambda net, cache, **kw: computed.append(kw["input_ids"].shape)
                        or original(net, cache, **kw))
    got, _ = greedy_decode_batch(model, prompts, 8, EOS)
    assert got == expected
    prompt_passes = [shape[1] for shape in computed if shape[0] == 1]
    if attention == "varlen":
        assert prompt_passes == [30 + sum(len(p) - 30 for p in prompts)]
    else:  # the system prompt, each instruction, then each prompt's own tokens (the lone prompt: all after the system prompt)
        assert sorted(prompt_passes) == sorted([30, 20, 9, 4, 18, 6, 11, 7])


def test_prefix_cache_is_per_key_and_cleared():
    cache = PrefixCache(min_shared=2)
    from transformers import DynamicCache

    kv = DynamicCache()
    kv.update(torch.zeros(1, 1, 5, 4), torch.ones(1, 1, 5, 4), 0)
    cache.store(True, [1, 2, 3, 4, 5], kv)
    hit = DynamicCache()
    assert cache.lookup(True, [1, 2, 3, 9, 9], hit) == 3 and hit.get_seq_length() == 3
    assert cache.lookup(False, [1, 2, 3, 9], DynamicCache()) == 0  # the base model's keys differ from the adapter's
    assert cache.lookup(True, [1, 2, 3, 4, 5], DynamicCache()) == 4  # the last token always runs: its logits are needed
    cache.clear()
    assert cache.lookup(True, [1, 2, 3, 9], DynamicCache()) == 0


def test_growing_layer_writes_in_place_and_keeps_what_it_handed_out():
    """The keys/values of ``GrowingLayer`` are those ``DynamicLayer`` concatenates, through
    crops and past its size, written into its buffer without copying the cache each step."""
    from transformers.cache_utils import DynamicLayer

    g = torch.Generator().manual_seed(0)
    ours, theirs = GrowingLayer(size=8), DynamicLayer()

    def step(n: int):
        k, v = torch.randn(2, 3, n, 4, generator=g), torch.randn(2, 3, n, 4, generator=g)
        got, want = ours.update(k, v), theirs.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(got, want))

    step(5)
    prompt_keys = ours.keys.clone()
    handed_out = ours.keys  # what a PrefixCache entry keeps: the prompt's positions
    buffer = ours.keys.data_ptr()
    step(1)
    step(2)  # 8 of 8: still the first buffer
    assert ours.keys.data_ptr() == buffer
    ours.crop(-2)
    theirs.crop(-2)
    assert ours.get_seq_length() == theirs.get_seq_length() == 6
    step(2)  # over a crop: written where the rejected positions were
    step(4)  # past its size: a new buffer, the old contents carried over
    assert ours.keys.data_ptr() != buffer and ours.get_seq_length() == 12
    assert torch.equal(handed_out, prompt_keys)
    ours.keys = ours.keys[:1].clone()  # replaced from outside (as a batch selection does)
    theirs.keys, theirs.values = theirs.keys[:1], theirs.values[:1]
    ours.values = ours.values[:1].clone()
    step_k, step_v = torch.randn(1, 3, 1, 4, generator=g), torch.randn(1, 3, 1, 4, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(ours.update(step_k, step_v), theirs.update(step_k, step_v)))


def test_teacher_forced_decoding_replays_the_given_answer(model):
    """Benchmarks time an answer of a given content: the loop follows it, drafts and all."""
    prompt = _prompts()[0]
    teacher = [11, 12, 13, 14, 11, 12, 13, 14, 11, 12, 13, EOS]
    drafter = NgramDrafter([teacher], stop_id=EOS)
    got, _, stats = greedy_decode(model, prompt, len(teacher), EOS, drafter=drafter, draft_tokens=10, teacher=teacher)
    assert got == teacher
    assert stats["forward_passes"] == 2  # the prompt's pass, then one pass checks the rest


def test_decoding_passes_the_cache_by_the_name_the_model_takes(model):
    """transformers 5.2x renamed forward's past_key_values to cache and drops the old name in
    5.40: both loops use whichever this model's forward takes, so no deprecation fires."""
    import inspect
    import warnings

    from ccexp.backends.decoding import _cache_arg

    assert _cache_arg(type(model)) in inspect.signature(type(model).forward).parameters
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        greedy_decode(model, _prompts()[0], 4, EOS, drafter=NgramDrafter([], stop_id=EOS), draft_tokens=3)
        greedy_decode_batch(model, _prompts()[:2], 4, EOS)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_backend_single_request_matches_its_batched_answer(method):
    """TorchBackend.generate: a batch (shared start once, rows unpadded) gives transformers'
    generate's answers, and one prompt alone (drafts + prefix cache) its batched answer; prompt
    tuning keeps generate for both."""
    from conftest import FAST, compose_cfg

    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.data import build_splits
    from ccexp.data.batching import prompt_text
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", "backend.precision=32-true", f"method={method}"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    backend = TorchBackend(rc, "cpu", resolve_model_dir(rc.model), [ex["messages"][-1]["content"] for ex in splits["train"]])
    prompts = [ex["messages"][:-1] for ex in splits["test"][:3]]
    batched = backend.generate(prompts, 12)
    ids = [backend.tokenizer(backend_prompt, add_special_tokens=False)["input_ids"]
           for backend_prompt in (prompt_text(backend.tokenizer, p) for p in prompts)]
    with backend._net(True) as net:  # transformers' generate on the same prompts
        reference, _ = backend._generate(net, ids, 12)
    assert batched.texts == [backend.tokenizer.decode(a, skip_special_tokens=True).strip() for a in reference]
    for i, prompt in enumerate(prompts):
        single = backend.generate([prompt], 12)
        assert single.texts == [batched.texts[i]] and single.new_tokens == [batched.new_tokens[i]]
        assert single.first_token_seconds[0] <= single.seconds[0]
    stored = len(backend.prefix_cache._store)
    assert stored == (3 if method == "lora" else 0)  # prompt tuning: generate, no prefix cache
    assert backend.generate([prompts[1]], 12, adapter=False).texts[0] == backend.generate(prompts, 12, adapter=False).texts[1]


def test_generation_prompts_are_cut_as_in_training(monkeypatch):
    """A prompt over max_seq_len keeps max_seq_len - 1 tokens, as training keeps it, not
    max_seq_len - the answer cap; and it loses its middle as training's do: its start (the
    system prompt, and the instruction up to half the room) and its end stay."""
    from conftest import FAST, compose_cfg

    from ccexp.backends import decoding
    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.data import build_splits
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", "model.max_seq_len=64"))
    backend = TorchBackend(rc, "cpu", resolve_model_dir(rc.model))
    prompt = build_splits(rc.data, rc.data_size, rc.task_mix)["test"][0]["messages"][:-1]
    seen = []
    original = decoding.greedy_decode
    monkeypatch.setattr(decoding, "greedy_decode", lambda net, ids, *a, **kw: seen.append(ids) or original(net, ids, *a, **kw))
    backend.generate([prompt], 12)
    full = backend.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert len(full) > 63 and len(seen[0]) == 63
    # The system prompt is longer than half of this room: the start fills that half, the end the rest.
    assert seen[0][:31] == list(full[:31]) and seen[0][31:] == list(full[-32:])


def test_prompt_learning_models_keep_the_prefix_tree(model):
    """peft's prompt tuning puts virtual tokens before the row that a packed pass's segments
    would not cover: such a model is never packed (ccexp evaluates it with generate anyway)."""
    import copy

    from peft import PromptTuningConfig, get_peft_model

    from ccexp.backends import decoding

    tuned = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert decoding._packs_prompts(model) and not decoding._packs_prompts(tuned)


def test_greedy_tokens_are_bf16_argmaxes_ties_included():
    """greedy_tokens argmaxes in float32 for speed: the same token as argmax over the bf16
    logits, the first index where the top scores tie (bf16's coarse steps make ties common)."""
    from ccexp.backends.decoding import greedy_tokens

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(11, 4096, generator=g) * 4).round().bfloat16()  # many exact ties
    logits[3, [7, 9, 4000]] = 100.0  # a tie at the top: the first index wins
    picked = greedy_tokens(logits)
    assert picked.dtype == torch.int64 and picked[3] == 7
    assert torch.equal(picked, logits.argmax(-1))
