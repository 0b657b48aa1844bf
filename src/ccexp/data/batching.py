"""Tokenized examples, grouped batches and their collation for causal LMs, two layouts:

- left-padded rows (``collate``): every answer at the end of its row, so the loss needs
  vocabulary logits for the last ``max answer + 1`` positions only (``logits_to_keep``), as
  generation does. Batches group examples of similar length, so little compute goes to padding.
- one packed row (``collate_packed``, ``backend.packing``): the prompt start that all the
  batch's examples share (system prompt; the task instruction too in batches grouped by
  prompt), once, then each example's own tokens, no padding. Attention keeps the examples
  apart (``backends/attention.py``), so the loss and its gradients are the padded batch's, and
  the shared start is computed once per batch instead of once per example.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

IGNORE = -100

log = logging.getLogger("ccexp")


def prompt_text(tokenizer, messages: Sequence[dict], where: str | None = None) -> str:
    """The chat-formatted prompt that asks the model for the next assistant turn. ``where``
    names the example (its id, file:line for the user's files) if the model's template refuses it."""
    from jinja2 import TemplateError

    from ccexp.config import ConfigError, first_line

    messages = list(messages)
    if getattr(tokenizer, FOLDS_SYSTEM, False):
        messages = fold_system(messages)
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateError as err:  # e.g. Mistral's "roles must alternate": two user turns in a row
        refused = err
    if messages and messages[0]["role"] == "system":
        # Gemma's templates raise 'System role not supported'; every ccexp source has a system turn.
        try:
            text = tokenizer.apply_chat_template(fold_system(messages), add_generation_prompt=True, tokenize=False)
        except TemplateError:
            pass
        else:
            log.info("the model's chat template refuses a system turn (%s): the system prompt goes at the start of "
                     "the first user turn, in training and generation alike", first_line(refused))
            setattr(tokenizer, FOLDS_SYSTEM, True)  # said once; every later prompt folded the same way
            return text
    raise ConfigError(f"{where or 'a prompt'}: the model's chat template refuses this conversation "
                      f"({first_line(refused)}); expected the turns the template allows") from None


FOLDS_SYSTEM = "ccexp_folds_system"  # set on a tokenizer whose template refuses the system role


def fold_system(messages: list[dict]) -> list[dict]:
    """The system prompt at the start of the first user turn (a blank line between), as Gemma's
    docs advise for its templates, which have no system role; alone, it becomes the user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{**rest[0], "content": f"{system['content']}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{**system, "role": "user"}, *rest]


def prompt_ids(tokenizer, messages: Sequence[dict], room: int, where: str | None = None) -> list[int]:
    """The chat-formatted prompt's tokens, at most ``room`` of them (``fit_prompt``)."""
    text = prompt_text(tokenizer, messages, where)
    return fit_prompt(tokenizer, text, messages, tokenizer(text, add_special_tokens=False)["input_ids"], room)


def fit_prompt(tokenizer, text: str, messages: Sequence[dict], ids: list[int], room: int,
               head: int | None = None) -> list[int]:
    """``ids`` (``text``, the prompt of ``messages``, tokenized) in at most ``room`` tokens. An
    over-long prompt loses its middle, not its start: its head, the system prompt and the first
    user turn's first paragraph, stays (up to half the room), and the rest of the room is the
    prompt's end, the latest turns and the assistant header the answer follows. ccexp's own
    prompts are the task instruction, a blank line, then the transcript, so what goes is the
    transcript's oldest part; cutting from the left had taken the system prompt and the
    instruction (the label list of a classification) first, from every long call alike.
    ``head``: ``head_tokens`` where the caller has it already."""
    if len(ids) <= room:
        return ids
    head = min(head_tokens(tokenizer, text, messages) if head is None else head, room // 2)
    return ids[:head] + ids[len(ids) - (room - head):]


def head_tokens(tokenizer, text: str, messages: Sequence[dict]) -> int:
    """How many of the prompt's first tokens are its head (``fit_prompt``): the text up to the end
    of the first user turn's first paragraph (``head_end``), tokenized alone (a token prefix of the
    whole; one token more or less at the seam only moves the cut by a token)."""
    end = head_end(text, messages)
    return len(tokenizer(text[:end], add_special_tokens=False)["input_ids"]) if end else 0


def head_end(text: str, messages: Sequence[dict]) -> int:
    """Where the prompt's head ends in ``text``: after the first user turn's first paragraph. No
    user turn, or a template that rewrites its text: 0, no head, the prompt's end only."""
    at = 0  # each turn is looked for after the one before it: a short user turn ("hi") can occur in the system prompt
    for message in messages:
        # Stripped: templates that trim a turn (Llama 3's ``| trim``) render it without its edges
        content = message["content"].strip() if isinstance(message["content"], str) else ""
        found = text.find(content, at)
        if found < 0:
            return 0
        if message["role"] == "user":
            return found + len(content.split("\n\n", 1)[0])
        at = found + len(content)
    return 0


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_answer: int
    prompt_cut: bool  # lost its middle: the transcript's oldest tokens (``fit_prompt``)
    answer_cut: bool = False  # over half of max_len: lost its end, kept its EOS
    head_cut: bool = False  # the prompt cut, and its head (system prompt, instruction) over half the room too

    @property
    def truncated(self) -> bool:
        return self.prompt_cut or self.answer_cut


def cut_parts(n_prompt: int, n_answer: int, max_len: int) -> tuple[bool, bool]:
    """(answer cut, prompt cut) for an example of these token counts (the answer with its EOS):
    an answer keeps at most half of ``max_len``, the prompt what the answer leaves."""
    return n_answer > max_len // 2, n_prompt > prompt_room(n_answer, max_len)


def prompt_room(n_answer: int, max_len: int) -> int:
    """The prompt tokens ``encode`` keeps beside an answer of ``n_answer`` tokens (cut to half of
    ``max_len``); a cut prompt keeps at most half of it for its head (``fit_prompt``)."""
    return max_len - min(n_answer, max_len // 2)


def said_cut(prompts: int, answers: int, heads: int = 0) -> str:
    """"3 prompts lose their transcript's oldest tokens (the instruction kept), 1 prompt loses part
    of its instruction (...), 1 answer over half of it loses its end": the parts cut, for the
    training log and the dataset card alike. ``heads``: those of the ``prompts`` whose head was cut too."""
    parts = []
    if prompts - heads:
        parts.append(("1 prompt loses its" if prompts - heads == 1 else f"{prompts - heads} prompts lose their")
                     + " transcript's oldest tokens (the instruction kept)")
    if heads:
        parts.append(("1 prompt loses part of its" if heads == 1 else f"{heads} prompts lose part of their")
                     + " instruction (over half of model.max_seq_len)")
    if answers:
        parts.append("1 answer over half of it loses its end" if answers == 1 else
                     f"{answers} answers over half of it lose their end")
    return ", ".join(parts)


ENCODE_CHUNK = 512  # texts per tokenizer call: its batch runs on every core, yet holds few encodings at once


def token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text's tokens (no special tokens), ENCODE_CHUNK texts per call: one call per text
    used one core, and 25,790 training prompts took most of a run's setup."""
    return [ids for start in range(0, len(texts), ENCODE_CHUNK)
            for ids in tokenizer(list(texts[start:start + ENCODE_CHUNK]), add_special_tokens=False)["input_ids"]]


def token_counts(tokenizer, texts: Sequence[str]) -> list[int]:
    """Each text's number of tokens, keeping only the counts chunk by chunk: every prompt's
    encoding held at once (BANKING77's 13,083 prompts) took +1.25 GB."""
    return [len(ids) for start in range(0, len(texts), ENCODE_CHUNK)
            for ids in token_ids(tokenizer, texts[start:start + ENCODE_CHUNK])]


def encode(tokenizer, example: dict, max_len: int) -> Encoded:
    """Prompt tokens + answer tokens + EOS; an over-long prompt loses its middle (``fit_prompt``),
    and an answer longer than half of ``max_len`` keeps its start and EOS. Both count as truncated."""
    return encode_all(tokenizer, [example], max_len)[0]


def encode_all(tokenizer, examples: Sequence[dict], max_len: int) -> list[Encoded]:
    """``encode`` of each example, ENCODE_CHUNK at a time: their prompts, answers and the heads
    of the cut prompts tokenized in one call each (``token_ids``), and each chunk's uncut
    prompt tokens let go before the next."""
    items = []
    for start in range(0, len(examples), ENCODE_CHUNK):
        chunk = examples[start:start + ENCODE_CHUNK]
        texts = [prompt_text(tokenizer, ex["messages"][:-1], ex.get("id")) for ex in chunk]
        prompts = token_ids(tokenizer, texts)
        answers = token_ids(tokenizer, [ex["messages"][-1]["content"] + tokenizer.eos_token for ex in chunk])
        ends = {i: head_end(texts[i], chunk[i]["messages"][:-1]) for i, (prompt, answer) in enumerate(zip(prompts, answers))
                if cut_parts(len(prompt), len(answer), max_len)[1]}  # a cut prompt keeps its head (head_tokens)
        ends = {i: end for i, end in ends.items() if end}
        heads = dict(zip(ends, map(len, token_ids(tokenizer, [texts[i][:end] for i, end in ends.items()]))))
        items += [_fit(tokenizer, ex["messages"], text, prompt, answer, max_len, heads.get(i, 0))
                  for i, (ex, text, prompt, answer) in enumerate(zip(chunk, texts, prompts, answers, strict=True))]
    return items


def _fit(tokenizer, messages: Sequence[dict], text: str, prompt: list[int], answer: list[int],
         max_len: int, head: int) -> Encoded:
    """``head``: ``head_tokens`` of a prompt that is cut (0 for one that is not)."""
    cut_answer, cut_prompt = cut_parts(len(prompt), len(answer), max_len)
    if cut_answer:  # keep EOS: a model trained on answers without it never learns to stop
        answer = answer[: max_len // 2 - 1] + answer[-1:]
    room = max_len - len(answer)
    prompt = fit_prompt(tokenizer, text, messages[:-1], prompt, room, head)
    return Encoded(prompt + answer, len(answer), cut_prompt, cut_answer, head > room // 2)


def generation_prompt_room(max_seq_len: int, max_new_tokens: int, context: int | None) -> int:
    """Most prompt tokens kept when generating (over-long prompts lose their middle, ``fit_prompt``).
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
    def __init__(self, tokenizer, examples: Sequence[dict], max_len: int, split: str | None = None):
        """``split`` (train, val): say in the log how many examples were cut to ``max_len``."""
        self.items = encode_all(tokenizer, examples, max_len)
        self.truncated = sum(item.truncated for item in self.items)
        if split and self.truncated:
            # Prompts lose the transcript's oldest tokens, which the model then never sees for
            # these examples (a call's start often states its issue); answers lose their end.
            prompts, answers, heads = (sum(getattr(item, cut) for item in self.items)
                                       for cut in ("prompt_cut", "answer_cut", "head_cut"))
            log.warning("%d of %d %s examples were cut to model.max_seq_len=%d: %s; raise model.max_seq_len to keep "
                        "them whole", self.truncated, len(self.items), split, max_len, said_cut(prompts, answers, heads))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Encoded:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item.input_ids) for item in self.items]

    def sort_keys(self, by: str) -> list:
        """What a batch sampler groups by (``trainer.group_by``): ``length``, longest first
        (little padding), or the ``prompt``'s tokens, so examples with the same prompt start
        (the same task's instruction) land in one batch, which a packed row computes once."""
        if by == "prompt":
            return [item.input_ids[: len(item.input_ids) - item.n_answer] for item in self.items]
        return [-n for n in self.lengths]


class GroupedBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into mega-batches of ``group`` batches, sort each by ``keys``
    (``EncodedDataset.sort_keys``), batch, and shuffle the batches: random order, yet the rows
    of a batch are alike (similar lengths, or the same prompt start). ``spread`` (unshuffled
    only): the sorted batches in one order drawn from ``seed``, the same at every pass, so that
    a run's first batches (``trainer.limit_val_batches``) are the same examples at each
    validation, of every length, rather than the longest."""

    def __init__(self, keys: Sequence, batch_size: int, shuffle: bool, seed: int, group: int = 16,
                 multiple_of: int = 1, quiet: bool = False, spread: bool = False):
        self.keys, self.batch_size, self.shuffle, self.seed, self.group = list(keys), batch_size, shuffle, seed, group
        self.spread = spread
        # With gradient accumulation, whole groups of micro-batches per epoch keep every optimizer
        # step the same size and validation on the step grid; the dropped tail is reshuffled
        # into the next epoch.
        self.multiple_of = multiple_of
        n_batches = (len(self.keys) + batch_size - 1) // batch_size
        left = n_batches - self._keep(n_batches)
        if left and not quiet:  # said: in a one-epoch run those examples are never trained
            log.info("trainer.grad_accum=%d: each epoch trains %d of its %d batches (whole optimizer steps); the %d "
                     "left over %s other examples in each epoch's shuffle", multiple_of, self._keep(n_batches),
                     n_batches, left, "is" if left == 1 else "are")
        self.epoch = 0
        self._position = (0, 0)  # (epoch of the pass under way, batches it has handed out)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Where training is in the batch order, for a checkpoint (``ccexp.resume``)."""
        epoch, served = self._position
        return {"epoch": epoch, "served": served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next pass over the checkpointed epoch continues it: the same order, its served
        batches skipped (all of them where it was saved on the epoch's last batch)."""
        self.epoch, self._skip = int(state["epoch"]), int(state["served"])

    def __len__(self) -> int:
        return self._keep((len(self.keys) + self.batch_size - 1) // self.batch_size)

    def _keep(self, n_batches: int) -> int:
        return n_batches - n_batches % self.multiple_of if n_batches >= self.multiple_of else n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.keys)))
        if self.shuffle:
            rng.shuffle(order)
        mega = self.batch_size * self.group if self.shuffle else len(order)
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: self.keys[i])
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        elif self.spread:
            random.Random(self.seed).shuffle(batches)
        epoch, skip, self._skip = self.epoch, self._skip, 0
        self.epoch += 1
        return self._serve(epoch, batches[skip : self._keep(len(batches))], skip)

    def _serve(self, epoch: int, batches: list[list[int]], served: int) -> Iterator[list[int]]:
        self._position = (epoch, served)
        for batch in batches:
            served += 1
            self._position = (epoch, served)
            yield batch


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
            "n_answer": torch.tensor(max(item.n_answer for item in items)), **_counts(items, int(attention_mask.sum()))}


def collate_packed(items: Sequence[Encoded]) -> dict:
    """One row: the prompt start every item shares, then each item's own tokens (module docstring).

    Position ids restart after the shared start for each item, as if it had a row of its own.
    The start stops short of every item's last prompt token, so each item's own tokens include
    the position that predicts its first answer token. ``keep`` lists the positions whose logits
    the loss needs (each one predicts the answer token after it, in ``labels``); ``segments``
    goes to the attention function."""
    prompts = [item.input_ids[: len(item.input_ids) - item.n_answer] for item in items]
    shared = common_prefix_all(prompts, min(len(p) for p in prompts) - 1) if len(items) > 1 else 0
    ids, positions, keep, targets, lengths = list(items[0].input_ids[:shared]), list(range(shared)), [], [], []
    for item in items:
        own = item.input_ids[shared:]
        ids += own
        positions += range(shared, len(item.input_ids))
        end = len(ids)
        keep += range(end - item.n_answer - 1, end - 1)
        targets += own[len(own) - item.n_answer :]
        lengths.append(len(own))
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long), "keep": torch.tensor(keep),
            "labels": torch.tensor(targets), "segments": (shared, tuple(lengths)), **_counts(items, len(ids))}


def collator(packed: bool, pad_id: int) -> Callable[[Sequence[Encoded]], dict]:
    """The collate function for one layout: a packed row, or left-padded rows."""
    return collate_packed if packed else partial(collate, pad_id=pad_id)


def _counts(items: Sequence[Encoded], computed: int) -> dict[str, int]:
    """``n_tokens``: the examples' tokens, each counted as its example has it (what throughput
    counts, padded or packed alike); ``n_computed``: the tokens the model runs on, padding aside
    (a packed row's shared start once), what hardware efficiency counts."""
    return {"n_tokens": sum(len(item.input_ids) for item in items), "n_computed": computed}


def to_device(batch: dict, device) -> dict:
    """A batch's tensors on ``device``; its plain values (token counts, segments) as they are."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n


def common_prefix_all(rows: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens all ``rows`` share, at most ``limit``."""
    n = max(limit, 0)
    for row in rows[1:]:
        n = common_prefix(rows[0], row, n)
    return n


def completion_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of the answer tokens, and how many there are.

    Logits are computed only where an answer token is predicted: on a 49k vocabulary the
    full-sequence logits would cost more than a transformer layer and most of the memory.
    """
    if "segments" in batch:  # one packed row: the logits at ``keep`` predict ``labels``
        from ccexp.backends.attention import SEGMENTS

        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], logits_to_keep=batch["keep"], **{SEGMENTS: batch["segments"]})
        nll = torch.nn.functional.cross_entropy(out.logits[0].float(), batch["labels"], reduction="sum")
        return nll, batch["labels"].new_tensor(batch["labels"].numel())
    keep = int(batch["n_answer"]) + 1
    # Here, not at the top: the data side (python -m ccexp.data) runs without peft imported.
    from ccexp.methods.prompt_tuning import prompt_learning, soft_prompt_inputs

    if prompt_learning(model):  # each row's soft prompt next to its text, not before its padding
        out = model.base_model(**soft_prompt_inputs(model, batch["input_ids"], batch["attention_mask"]),
                               logits_to_keep=keep)
    else:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()
    targets = batch["labels"][:, -(keep - 1):]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (targets != IGNORE).sum()
