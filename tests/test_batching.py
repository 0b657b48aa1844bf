"""Left-padded batches, length grouping, and the answer-only loss matching the plain HF loss."""

from __future__ import annotations

import logging
import torch

from ccexp.data.batching import IGNORE, EncodedDataset, GroupedBatchSampler, collate, completion_nll, encode
from ccexp.models import load_model


def _example(user: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def test_encode_puts_answer_and_eos_last(tokenizer):
    enc = encode(tokenizer, _example("hello there", '{"csat": 4}'), 256)
    answer = tokenizer.decode(enc.input_ids[-enc.n_answer:])
    assert answer == '{"csat": 4}<|im_end|>'
    assert tokenizer.decode(enc.input_ids[:-enc.n_answer]).endswith("<|im_start|>assistant\n")
    assert not enc.truncated


def test_long_prompt_loses_its_middle_and_is_counted(tokenizer):
    """The system prompt and the instruction (the first user paragraph) stay, and the prompt's
    end: cut from the left, a long call lost its instruction and label list first."""
    enc = encode(tokenizer, _example("Rate the call.\n\nCustomer: " + "word " * 400 + "bye", '{"csat": 4}'), 128)
    assert len(enc.input_ids) == 128 and enc.truncated and enc.prompt_cut
    assert tokenizer.decode(enc.input_ids[-enc.n_answer:]) == '{"csat": 4}<|im_end|>'
    prompt = tokenizer.decode(enc.input_ids[:-enc.n_answer])
    assert prompt.startswith("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nRate the call.")
    assert "Customer:" not in prompt and prompt.endswith("word bye<|im_end|>\n<|im_start|>assistant\n")


def test_a_prompt_whose_head_is_most_of_it_keeps_half_the_room_for_its_end(tokenizer):
    """One long first paragraph (a transcript with no instruction before it): its start and the
    prompt's end share the room, so the answer still follows the assistant header."""
    from ccexp.data.batching import prompt_ids

    messages = _example("start " + "word " * 400 + "end", "")["messages"][:-1]
    ids = prompt_ids(tokenizer, messages, 100)
    full = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"]
    assert len(ids) == 100 and ids[:50] == full[:50] and ids[50:] == full[-50:]
    assert prompt_ids(tokenizer, messages, len(full)) == full  # whole where it fits


def test_cut_training_examples_are_said_in_the_log(tokenizer, caplog):
    """Which part was cut: a long answer (over half of max_seq_len) loses its end, a long prompt its middle."""
    examples = [_example("Rate it.\n\n" + "word " * 400, '{"csat": 4}'), _example("hi", '{"csat": 4}'),
                _example("hi", "word " * 100)]
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        dataset = EncodedDataset(tokenizer, examples, 128, "train")
        EncodedDataset(tokenizer, examples[1:2], 128, "val")  # none cut: nothing said
    assert dataset.truncated == 2 and [(i.prompt_cut, i.answer_cut) for i in dataset.items] == [
        (True, False), (False, False), (False, True)]
    long_answer = dataset.items[2]
    assert long_answer.n_answer == 64 and len(long_answer.input_ids) < 128
    assert long_answer.input_ids[-1] == tokenizer.eos_token_id
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 train examples were cut to model.max_seq_len=128: 1 prompt loses its transcript's oldest tokens "
        "(the instruction kept), 1 answer over half of it loses its end; raise model.max_seq_len to keep them whole"]


def test_collate_left_pads_and_masks_prompt(tokenizer):
    items = EncodedDataset(tokenizer, [_example("hi", "A"), _example("a much longer question " * 3, "BB")], 256).items
    batch = collate(items, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    assert width == max(len(i.input_ids) for i in items)
    short = items[0]
    pad = width - len(short.input_ids)
    assert batch["attention_mask"][0, :pad].sum() == 0 and batch["attention_mask"][0, pad:].all()
    labelled = (batch["labels"] != IGNORE).sum(dim=1).tolist()
    assert labelled == [i.n_answer for i in items]
    assert int(batch["n_answer"]) == max(i.n_answer for i in items)


def test_length_grouped_sampler_covers_everything_once_and_groups():
    lengths = [((i * 37) % 101) + 1 for i in range(200)]
    sampler = GroupedBatchSampler([-n for n in lengths], batch_size=4, shuffle=True, seed=0, group=10)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200)) and len(batches) == len(sampler)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_padded = sum(max(lengths[i] for i in range(s, s + 4)) * 4 for s in range(0, 200, 4))
    assert padded < 0.8 * random_padded  # far less padding than arrival order
    assert list(sampler) != batches  # a new order each epoch


def test_answer_only_loss_equals_full_logits_loss(tiny_dir, tokenizer):
    """The logits_to_keep shortcut computes the same loss as HF's own labels= path."""
    torch.manual_seed(0)
    model = load_model(tiny_dir, torch.float32).eval()
    items = EncodedDataset(tokenizer, [_example("short", '{"a": 1}'), _example("longer prompt " * 5, '{"b": [1, 2, 3]}')], 256).items
    batch = collate(items, tokenizer.pad_token_id)
    with torch.no_grad():
        nll, count = completion_nll(model, batch)
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(nll / count, reference, rtol=1e-5, atol=1e-5)


def test_sampler_keeps_whole_accumulation_groups(caplog):
    with caplog.at_level(logging.INFO, logger="ccexp"):
        sampler = GroupedBatchSampler([10] * 22, batch_size=4, shuffle=True, seed=0, multiple_of=4)
    assert len(sampler) == 4 and len(list(sampler)) == 4  # 6 batches -> 4, the tail drops, and says so
    assert caplog.messages == ["trainer.grad_accum=4: each epoch trains 4 of its 6 batches (whole optimizer steps); "
                               "the 2 left over are other examples in each epoch's shuffle"]
    assert len(GroupedBatchSampler([10] * 5, batch_size=4, shuffle=True, seed=0, multiple_of=4)) == 2
    caplog.clear()
    GroupedBatchSampler([10] * 22, batch_size=4, shuffle=True, seed=0, multiple_of=4, quiet=True)  # only counted
    assert caplog.messages == []


def test_generation_keeps_as_much_prompt_as_training():
    from ccexp.data.batching import generation_prompt_room

    # Training keeps up to max_seq_len - 1 prompt tokens; so does generation, whatever the cap...
    assert generation_prompt_room(1024, 160, 8192) == 1023
    assert generation_prompt_room(1024, 160, None) == 1023
    # ...unless the model's own context cannot hold prompt + answer cap.
    assert generation_prompt_room(1024, 160, 1100) == 940
    assert generation_prompt_room(64, 500, 256) == 1


def test_a_conversation_the_chat_template_refuses_names_its_row(tiny_dir):
    """Mistral-style templates raise on two user turns in a row, common in real chat logs: one
    line naming the example's file:line, not jinja's traceback."""
    import pytest

    from ccexp.config import ConfigError
    from ccexp.models import load_tokenizer

    strict = load_tokenizer(tiny_dir)  # a copy: the session's tokenizer stays as it is
    strict.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
                            "{% endif %}{{ m['content'] }}{% endfor %}")
    example = {"id": "chats.jsonl:38", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hello?"},
                                                   {"role": "assistant", "content": "yes"}]}
    with pytest.raises(ConfigError) as err:
        encode(strict, example, 256)
    assert str(err.value) == ("chats.jsonl:38: the model's chat template refuses this conversation (Conversation roles "
                              "must alternate user/assistant/user/assistant/...); expected the turns the template allows")


def test_the_kept_head_is_the_first_user_turns_first_paragraph_not_a_match_in_the_system_prompt(tokenizer):
    """A user turn whose first paragraph also occurs in the system prompt ("hi" in "this") is
    found where the user's turn is."""
    from ccexp.data.batching import head_tokens

    messages = [{"role": "system", "content": "this is sys"}, {"role": "user", "content": "hi\n\nmore"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:head_tokens(tokenizer, text, messages)])
    assert head == "<|im_start|>system\nthis is sys<|im_end|>\n<|im_start|>user\nhi"


def test_the_head_is_found_in_a_template_that_trims_the_turns(tokenizer):
    """Llama 3's template trims each turn: a turn with spaces at its edges is found all the same."""
    from ccexp.data.batching import head_tokens

    messages = [{"role": "system", "content": " sys "}, {"role": "user", "content": "\nRate it.\n\nCustomer: hi "}]
    text = "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nRate it.\n\nCustomer: hi<|im_end|>\n"
    head = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:head_tokens(tokenizer, text, messages)])
    assert head == "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nRate it."


GEMMA_TEMPLATE = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                  "supported') }}{% endif %}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + "
                  "'\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                  "{{'<start_of_turn>model\\n'}}{% endif %}")


def test_a_template_that_refuses_the_system_role_gets_it_in_the_first_user_turn(tiny_dir, caplog):
    """Gemma's template raises on a system turn, and every ccexp source has one: the system
    prompt goes at the start of the first user turn (Gemma's own advice), said once, and
    training and generation build the same prompt."""
    from ccexp.data.batching import prompt_ids
    from ccexp.models import load_tokenizer

    gemma = load_tokenizer(tiny_dir)  # a copy: the session's tokenizer stays as it is
    gemma.chat_template = GEMMA_TEMPLATE
    example = {"id": "x", "messages": [{"role": "system", "content": "You label calls."},
                                       {"role": "user", "content": "Card lost"}, {"role": "assistant", "content": "ok"}]}
    with caplog.at_level(logging.INFO, logger="ccexp"):
        enc = encode(gemma, example, 256)
        encode(gemma, example, 256)
    folded = [{"role": "user", "content": "You label calls.\n\nCard lost"}]
    expected = gemma.apply_chat_template(folded, add_generation_prompt=True, tokenize=False)
    assert gemma.decode(enc.input_ids[:-enc.n_answer]) == expected
    assert prompt_ids(gemma, example["messages"][:-1], 255) == enc.input_ids[:-enc.n_answer]
    assert [r.getMessage() for r in caplog.records] == [
        "the model's chat template refuses a system turn (System role not supported): the system prompt goes at the "
        "start of the first user turn, in training and generation alike"]


def test_a_prompt_whose_instruction_is_cut_too_is_said_apart(tokenizer, caplog):
    """The head (system prompt and instruction: a 77-label list) over half of the room is cut
    itself: "the instruction kept" was untrue for it."""
    labels = "Labels: " + ", ".join(f"label_{i}" for i in range(120))
    examples = [_example(f"{labels}\n\nCustomer: hi", '{"label": "a"}'),
                _example("Rate the call.\n\nCustomer: " + "word " * 400, '{"label": "a"}')]
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        dataset = EncodedDataset(tokenizer, examples, 128, "train")
    assert [(i.prompt_cut, i.head_cut) for i in dataset.items] == [(True, True), (True, False)]
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 2 train examples were cut to model.max_seq_len=128: 1 prompt loses its transcript's oldest tokens "
        "(the instruction kept), 1 prompt loses part of its instruction (over half of model.max_seq_len); raise "
        "model.max_seq_len to keep them whole"]


def test_a_capped_validation_checks_the_same_examples_of_every_length(tokenizer):
    """trainer.limit_val_batches checks a run's first val batches: they were the longest examples
    (on experiment=small_vs_base, 48 of 188 with 14 coaching answers and 3 churn ones of 32 each),
    the best adapter and early stopping chosen on them. They are now spread over every length,
    and still the same examples at every check."""
    from ccexp.backends.lightning_modules import ChatDataModule

    examples = [_example("word " * n, '{"a": 1}') for n in range(1, 41)]  # 40 examples, growing
    loader = ChatDataModule(tokenizer, examples[:4], examples, 512, batch_size=4, seed=0).val_dataloader()
    batches = list(loader.batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(40))
    checked = [i for b in batches[:3] for i in b]
    assert checked == [i for b in list(loader.batch_sampler)[:3] for i in b]  # the same at every check
    assert min(checked) < 28  # not the 12 longest (28..39)
    assert all(max(b) - min(b) == 3 for b in batches)  # each batch still of like lengths


def test_a_split_is_tokenized_in_batches_with_each_example_encoded_as_alone(tokenizer, monkeypatch):
    """One tokenizer call per prompt and per answer used one core: 25,790 training examples took
    most of a full run's setup. Batches of ENCODE_CHUNK texts give the same tokens."""
    from ccexp.data import batching

    calls = []

    class Counting:  # the tokenizer, noting how many texts each call encodes (None: one text alone)
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kwargs):
            calls.append(len(texts) if isinstance(texts, list) else None)
            return tokenizer(texts, **kwargs)

    examples = [_example("Rate it.\n\n" + "word " * (40 * i), '{"csat": 4}' if i % 2 else "word " * 100)
                for i in range(5)]
    alone = [encode(tokenizer, ex, 128) for ex in examples]
    monkeypatch.setattr(batching, "ENCODE_CHUNK", 2)
    dataset = EncodedDataset(Counting(), examples, 128)
    assert dataset.items == alone and any(item.prompt_cut for item in alone) and any(item.answer_cut for item in alone)
    # Per chunk of two: its prompts, its answers, the heads of its cut prompts; never one text alone.
    chunks = [alone[:2], alone[2:4], alone[4:]]
    assert calls == [n for chunk in chunks for n in (len(chunk), len(chunk), sum(i.prompt_cut for i in chunk)) if n]
