"""Tokenized examples, length-grouped batches and left-padded collation for causal LMs.

Left padding puts every answer at the end of its row, so the loss needs vocabulary logits
for the last ``max answer + 1`` positions only (``logits_to_keep``), and generation uses the
same layout. Batches group examples of similar length, so little compute goes to padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

IGNORE = -100


def prompt_text(tokenizer, messages: Sequence[dict]) -> str:
    """The chat-formatted prompt that asks the model for the next assistant turn."""
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_answer: int
    truncated: bool


def encode(tokenizer, example: dict, max_len: int) -> Encoded:
    """Prompt tokens + answer tokens + EOS; an over-long prompt loses its oldest tokens, and an
    answer longer than half of ``max_len`` keeps its start and EOS. Both count as truncated."""
    messages = example["messages"]
    prompt = tokenizer(prompt_text(tokenizer, messages[:-1]), add_special_tokens=False)["input_ids"]
    answer = tokenizer(messages[-1]["content"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    cut_answer = len(answer) > max_len // 2
    if cut_answer:  # keep EOS: a model trained on answers without it never learns to stop
        answer = answer[: max_len // 2 - 1] + answer[-1:]
    room = max_len - len(answer)
    truncated = cut_answer or len(prompt) > room
    return Encoded(prompt[-room:] + answer, len(answer), truncated)


def generation_prompt_room(max_seq_len: int, max_new_tokens: int, context: int | None) -> int:
    """Most prompt tokens kept when generating (over-long prompts lose their oldest tokens).
    Training keeps up to ``max_seq_len - 1`` prompt tokens (``encode``: max_seq_len minus the
    answer), so generation keeps as many: reserving the whole answer cap inside max_seq_len
    instead (prompt ≤ 1024 - 160 for an all-in-one analysis) cut the system prompt and task
    instruction off prompts the model was trained on whole. Only the model's own context
    (``max_position_embeddings``) must hold prompt + answer cap."""
    room = max_seq_len - 1
    if context:
        room = min(room, context - max_new_tokens)
    return max(room, 1)


class EncodedDataset(Dataset):
    def __init__(self, tokenizer, examples: Sequence[dict], max_len: int):
        self.items = [encode(tokenizer, ex, max_len) for ex in examples]
        self.truncated = sum(item.truncated for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Encoded:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item.input_ids) for item in self.items]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into mega-batches of ``group`` batches, sort each by length, batch, and
    shuffle the batches: random order, yet rows in a batch have similar lengths."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, group: int = 16,
                 multiple_of: int = 1):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.group = list(lengths), batch_size, shuffle, seed, group
        # With gradient accumulation, whole groups of micro-batches per epoch keep every optimizer
        # step the same size and validation on the step grid; the dropped tail is reshuffled
        # into the next epoch.
        self.multiple_of = multiple_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._keep((len(self.lengths) + self.batch_size - 1) // self.batch_size)

    def _keep(self, n_batches: int) -> int:
        return n_batches - n_batches % self.multiple_of if n_batches >= self.multiple_of else n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        mega = self.batch_size * self.group if self.shuffle else len(order)
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        self.epoch += 1
        return iter(batches[: self._keep(len(batches))])


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        ids = torch.tensor(item.input_ids, dtype=torch.long)
        input_ids[row, width - len(ids):] = ids
        attention_mask[row, width - len(ids):] = 1
        labels[row, width - item.n_answer:] = ids[len(ids) - item.n_answer:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "n_answer": torch.tensor(max(item.n_answer for item in items))}


def completion_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of the answer tokens, and how many there are.

    Logits are computed only where an answer token is predicted: on a 49k vocabulary the
    full-sequence logits would cost more than a transformer layer and most of the memory.
    """
    keep = int(batch["n_answer"]) + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()
    targets = batch["labels"][:, -(keep - 1):]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (targets != IGNORE).sum()
