"""Tokenisation, truncation that keeps the end of the response, batching and dynamic padding.

A sequence is ``prefix + prompt + middle + response + suffix`` where the special tokens depend
on the architecture: encoders ``[CLS] prompt [SEP] response [SEP]`` (token types 0 then 1),
decoders ``<bos>? prompt response``. When a sequence is too long the prompt loses its start
first; only if the response alone is too long does the response lose its start too, so the
end of the response (what the reward is about) is always kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dial.data.records import Example
from dial.errors import ConfigError


@dataclass(frozen=True)
class SequenceFormat:
    """Special tokens around the prompt and the response."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    token_types: bool
    pad_id: int

    @property
    def special_count(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def sequence_format(tokenizer, architecture: str) -> SequenceFormat:
    """The special-token layout for `tokenizer` on an encoder or a decoder."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if architecture == "encoder":
        cls_id = (
            tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        )
        sep_id = (
            tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        )
        prefix = (cls_id,) if cls_id is not None else ()
        sep = (sep_id,) if sep_id is not None else ()
        return SequenceFormat(prefix, sep, sep, token_types=True, pad_id=pad_id)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("x", add_special_tokens=True)[
        "input_ids"
    ][:1] == [tokenizer.bos_token_id]
    prefix = (tokenizer.bos_token_id,) if adds_bos else ()
    return SequenceFormat(prefix, (), (), token_types=False, pad_id=pad_id)


def _first_set(*token_ids: int | None) -> int | None:
    return next((t for t in token_ids if t is not None), None)


@dataclass
class EncodedExample:
    """Token ids of each (prompt, response) sequence of one example, and where each response
    starts (the first token of ``response + suffix``)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    label: float | None
    response_starts: list[int] | None = None

    @property
    def length(self) -> int:
        return max(len(ids) for ids in self.input_ids)


@dataclass
class EncodedData:
    """A tokenised data set and what truncation did to it."""

    examples: list[EncodedExample]
    truncated_prompts: int
    truncated_responses: int
    max_length: int

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        return [example.length for example in self.examples]

    def summary(self) -> str:
        return (
            f"{len(self.examples)} examples; sequences over {self.max_length} tokens: "
            f"{self.truncated_prompts} lost the start of their prompt, "
            f"{self.truncated_responses} also the start of their response"
        )


def truncate(prompt: list[int], response: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Fit prompt + response into `budget` tokens, keeping the end of the response.

    The prompt is cut from its start first (its end, next to the response, stays); when the
    response alone exceeds the budget the prompt goes entirely and the response keeps its end.
    """
    if len(prompt) + len(response) <= budget:
        return prompt, response
    if len(response) >= budget:
        return [], response[len(response) - budget :]
    keep = budget - len(response)
    return prompt[len(prompt) - keep :], response


def encode_examples(
    examples: Sequence[Example], tokenizer, fmt: SequenceFormat, max_length: int
) -> EncodedData:
    """Tokenise every (prompt, response) sequence of `examples` within `max_length` tokens."""
    budget = max_length - fmt.special_count
    if budget < 1:
        raise ConfigError(
            f"max_length {max_length} leaves no room beside the {fmt.special_count} special tokens"
        )
    prompts = sorted({example.prompt for example in examples})
    responses = sorted({r for example in examples for r in example.responses})
    prompt_ids = dict(zip(prompts, _tokenize(tokenizer, prompts), strict=True))
    response_ids = dict(zip(responses, _tokenize(tokenizer, responses), strict=True))
    encoded = []
    truncated_prompts = truncated_responses = 0
    for example in examples:
        ids, types, starts = [], [], []
        for response in example.responses:
            p, r = prompt_ids[example.prompt], response_ids[response]
            p_kept, r_kept = truncate(p, r, budget)
            truncated_prompts += len(p_kept) < len(p)
            truncated_responses += len(r_kept) < len(r)
            first = [*fmt.prefix, *p_kept, *fmt.middle]
            second = [*r_kept, *fmt.suffix]
            ids.append(first + second)
            types.append([0] * len(first) + [1] * len(second))
            starts.append(len(first))
        encoded.append(
            EncodedExample(ids, types if fmt.token_types else None, example.label, starts)
        )
    return EncodedData(encoded, truncated_prompts, truncated_responses, max_length)


def _tokenize(tokenizer, texts: list[str], chunk: int = 1024) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        out += tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
    return out


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    length_group: int = 0,
) -> list[list[int]]:
    """The order of one epoch as a list of batches of example indices.

    The order is a pure function of (seed, epoch), so a resumed run replays it exactly. With
    `length_group` > 0, random groups of that many batches are sorted by length before they
    are cut into batches, and the batches are shuffled: batches hold texts of similar length
    (less padding) while the order stays random; smaller groups give more random batches.
    """
    n = len(lengths)
    if not shuffle:
        order = list(range(n))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if length_group <= 0:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * length_group
    batches = []
    for start in range(0, n, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


def collate(
    examples: Sequence[EncodedExample], fmt: SequenceFormat, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad every sequence of a batch to the batch's longest, response-major.

    Row ``c * B + b`` holds response ``c`` of example ``b``, so preference pairs put all chosen
    sequences first and all rejected after them, in one forward pass. Besides the model inputs
    the batch holds ``response_mask`` (1 on the tokens of the response) and, for labelled
    examples, ``labels``.
    """
    n_responses = len(examples[0].input_ids)
    rows = [(e, c) for c in range(n_responses) for e in examples]
    width = max(len(e.input_ids[c]) for e, c in rows)
    input_ids = torch.full((len(rows), width), fmt.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (example, c) in enumerate(rows):
        ids = example.input_ids[c]
        offset = 0 if padding_side == "right" else width - len(ids)
        span = slice(offset, offset + len(ids))
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
        if example.token_type_ids is not None:
            token_type_ids[row, span] = torch.tensor(example.token_type_ids[c])
        if example.response_starts is not None:
            response_mask[row, offset + example.response_starts[c] : offset + len(ids)] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
    }
    if examples[0].token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    if examples[0].label is not None:
        batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.float32)
    return batch


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a collated batch that the model takes."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}
