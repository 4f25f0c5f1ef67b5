r"""Generation from a policy (a causal LM, optionally with a LoRA adapter), and ``dial generate``.

The steps, each a plain function the RL loop and the commands share:

1. :func:`load_policy`: the model and its tokenizer (left padding, a pad token).
2. :func:`encode_queries`: prompts -> query token ids through the chat template.
3. :func:`sample_responses`: left-padded batches through ``generate``; response ids, each cut
   after its first EOS token (:func:`sample_with_logprobs`: with their log-probabilities).
4. :func:`decode_responses`: ids -> text.

Sampling is pure ancestral sampling from :math:`\pi(y_t \mid x, y_{<t})^{1/\tau}` (renormalised;
:math:`\tau` the temperature): no top-k, top-p, repetition penalty or any other logits
processor, whatever the model's own ``generation_config`` asks for, so that for :math:`\tau = 1`
the log-probabilities PPO computes for :math:`\pi_{\mathrm{old}}` are those of the distribution
the responses came from.

``dial generate`` runs the same steps over a data file (or through vLLM when it is installed)
and writes JSONL as it goes; a rerun resumes after the records already written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dial.data.io import read_records
from dial.errors import ConfigError, DataError, DialError
from dial.models.registry import DECODER, resolve_model

logger = logging.getLogger(__name__)

#: Precision names (short and long) -> dtype of the loaded weights.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm")
ADAPTER_CONFIG = "adapter_config.json"


# Loading


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def find_adapter(path: str | Path) -> Path:
    """The LoRA adapter folder (with ``adapter_config.json``) at or inside ``path``.

    ``path`` is the adapter folder itself, or a ``dial rl`` folder that holds the policy's
    adapter: a run folder (``final/policy``), its ``final`` folder or a checkpoint folder
    (``policy``).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"adapter {path} is not a folder")
    for candidate in (folder, folder / "policy", folder / "final" / "policy"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    raise ConfigError(
        f"adapter {path} has no {ADAPTER_CONFIG} (not a peft LoRA adapter), nor has its "
        "policy/ or final/policy/ (a `dial rl` run)"
    )


def load_policy_tokenizer(
    model: str, trust_remote_code: bool = False
) -> tuple[PreTrainedTokenizerBase, Any]:
    """The tokenizer of ``model`` set up for generation, and the model's resolved location.

    Padding goes on the left (every prompt then ends where generation starts). A tokenizer
    without a pad token gets its unknown token when it has one distinct from EOS, else EOS;
    padding is never attended to, so which id fills it does not change any output.
    """
    resolved = resolve_model(model, trust_remote_code=trust_remote_code)
    if resolved.architecture != DECODER:
        raise ConfigError(f"generation needs a decoder (causal LM); {model} is an encoder")
    tokenizer = AutoTokenizer.from_pretrained(
        resolved.name_or_path, trust_remote_code=trust_remote_code
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        unk = tokenizer.unk_token
        distinct = unk is not None and tokenizer.unk_token_id != tokenizer.eos_token_id
        tokenizer.pad_token = unk if distinct else tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer of {model} has no pad, unknown or EOS token")
    return tokenizer, resolved


def load_policy(
    model: str,
    adapter: str | Path | None = None,
    precision: str = "fp32",
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (and its LoRA adapter) in eval mode, with its tokenizer.

    Args:
        model: a registered short name (``dial models``, e.g. ``smollm2-135m``), a local model
            folder or a hub id.
        adapter: a peft LoRA adapter folder, loaded on top (unmerged, frozen: a ``PeftModel``);
            or a ``dial rl`` run or checkpoint folder holding one (:func:`find_adapter`).
        precision: ``fp32``, ``bf16`` or ``fp16`` (or ``float32``, ``bfloat16``, ``float16``).
        trust_remote_code: allow the model's own code to run.
        device: where the model goes (default: CUDA when available, else the CPU).

    Returns:
        The model and the tokenizer of :func:`load_policy_tokenizer`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    adapter_folder = find_adapter(adapter) if adapter is not None else None
    tokenizer, resolved = load_policy_tokenizer(model, trust_remote_code)
    dtype = PRECISIONS[precision]
    if resolved.is_random_init:
        policy = AutoModelForCausalLM.from_config(resolved.config, dtype=dtype)
    else:
        policy = AutoModelForCausalLM.from_pretrained(
            resolved.name_or_path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    if adapter_folder is not None:
        from peft import PeftModel

        try:
            policy = PeftModel.from_pretrained(policy, str(adapter_folder))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise DialError(f"adapter {adapter} does not fit model {model}: {exc}") from exc
    policy.to(device if device is not None else default_device())
    policy.eval()
    return policy, tokenizer


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a response: the generation config's EOS ids and the tokenizer's.

    Chat models often end a turn with a token other than the tokenizer's EOS (Gemma's
    ``<end_of_turn>``, Llama-3's ``<|eot_id|>``); their generation config lists it.
    """
    configured = getattr(model, "generation_config", None)
    ids = getattr(configured, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ConfigError("the model and its tokenizer name no EOS token")
    return ids


# Queries


class EncodedQueries(list):
    """The query id tensors (a ``list``), with how many were cut to ``max_length``."""

    def __init__(self, queries: Sequence[torch.Tensor], truncated: int) -> None:
        super().__init__(queries)
        self.truncated = truncated


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_queries(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_length: int | None = None,
) -> EncodedQueries:
    """Token ids of each prompt as the model sees it before its answer: 1-D tensors, no padding.

    With a chat template, each prompt becomes one user turn followed by the generation prompt
    (``add_generation_prompt=True``); the template writes any BOS token itself. Without one, the
    plain text is tokenized with the tokenizer's special tokens (BOS where the model expects it).

    A query longer than ``max_length`` tokens keeps its **last** ``max_length`` tokens: the end
    holds the generation prompt (``<|im_start|>assistant\\n``) the answer must follow, while the
    start (BOS, a system prompt, the prompt's opening) is what is lost. The number cut is
    ``result.truncated`` and is logged as a warning.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    queries, truncated = [], 0
    for index, prompt in enumerate(prompts):
        if has_chat_template(tokenizer):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens")
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]
            truncated += 1
        queries.append(torch.tensor(ids, dtype=torch.long))
    if truncated:
        logger.warning(
            "%d of %d queries were longer than %d tokens and lost their start",
            truncated,
            len(queries),
            max_length,
        )
    return EncodedQueries(queries, truncated)


# Responses


def _pad_left(queries: Sequence[torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(q) for q in queries)
    ids = torch.full((len(queries), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(queries), width), dtype=torch.long)
    for row, query in enumerate(queries):
        ids[row, width - len(query) :] = query
        mask[row, width - len(query) :] = 1
    return ids, mask


def cut_after_eos(response: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """``response`` up to and including its first EOS token (all of it when it has none)."""
    ends = torch.nonzero(torch.isin(response, torch.as_tensor(eos_ids, device=response.device)))
    return response[: int(ends[0]) + 1] if len(ends) else response


@contextlib.contextmanager
def _own_generation_config(model: PreTrainedModel, config: GenerationConfig) -> Iterator[None]:
    """Let ``generate`` see only ``config``: it fills every unset field from the model's own
    generation config (a checkpoint's top-k, repetition penalty, ...), so swap that out."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = base.generation_config
    base.generation_config = config
    try:
        yield
    finally:
        base.generation_config = original


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[torch.Tensor],
    max_new_tokens: int,
    do_sample: bool = True,
    batch_size: int = 8,
    temperature: float = 1.0,
    seed: int | None = None,
) -> list[torch.Tensor]:
    r"""One response per query: 1-D token id tensors on the CPU, without padding.

    Queries go through ``generate`` in batches of ``batch_size``, in order, left-padded with an
    attention mask (positions count real tokens only). ``do_sample`` draws each token from
    :math:`\mathrm{softmax}(z / \tau)` with :math:`\tau` = ``temperature`` and no other change to
    the logits (``top_k=0``, ``top_p=1``; the model's generation config is ignored); otherwise
    decoding is greedy. Each response is cut after its first EOS token (kept; see
    :func:`eos_token_ids`); one that reaches ``max_new_tokens`` first has no EOS.

    ``seed`` makes sampling reproducible (for the same queries and ``batch_size``) without
    touching the global random state; ``None`` draws from the global generator.
    """
    arguments = (queries, max_new_tokens, do_sample, batch_size, temperature, seed)
    return [response for response, _ in _generate(model, tokenizer, *arguments, False)]


def sample_with_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[torch.Tensor],
    max_new_tokens: int,
    batch_size: int = 8,
    temperature: float = 1.0,
    seed: int | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    r"""Sample as :func:`sample_responses` does, and return with each response the
    log-probabilities :math:`\log \pi(y_t \mid x, y_{<t})` of its tokens, float32 on the CPU.

    They come from the logits ``generate`` computed anyway (before the temperature, i.e. the
    distribution at :math:`\tau = 1`, the one PPO's ratio is taken against), so the rollout's
    :math:`\log \pi_{\mathrm{old}}` costs no extra forward pass. They match a fresh forward
    over the padded query + response up to floating-point rounding (the key-value cache and
    another batch layout sum in another order).
    """
    arguments = (queries, max_new_tokens, True, batch_size, temperature, seed)
    pairs = list(_generate(model, tokenizer, *arguments, True))
    return [response for response, _ in pairs], [logprobs for _, logprobs in pairs]


def _generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[torch.Tensor],
    max_new_tokens: int,
    do_sample: bool,
    batch_size: int,
    temperature: float,
    seed: int | None,
    with_logprobs: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The loop behind :func:`sample_responses` and :func:`sample_with_logprobs`."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if any(len(q) == 0 for q in queries):
        raise ValueError("every query needs at least one token")
    eos_ids = eos_token_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None,
        num_beams=1,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        output_logits=with_logprobs,
        return_dict_in_generate=with_logprobs,
    )
    device = next(model.parameters()).device
    rng_devices = [device] if device.type == "cuda" else []
    with (
        _own_generation_config(model, config),
        torch.random.fork_rng(devices=rng_devices, enabled=seed is not None),
    ):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(queries), batch_size):
            ids, mask = _pad_left(queries[start : start + batch_size], tokenizer.pad_token_id)
            output = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            sequences = output.sequences if with_logprobs else output
            new_tokens = sequences[:, ids.shape[1] :]
            logprobs = None
            if with_logprobs:
                logits = torch.stack(output.logits, dim=1).float()  # [B, T, V]
                logprobs = torch.gather(
                    torch.log_softmax(logits, dim=-1), 2, new_tokens.unsqueeze(-1)
                ).squeeze(-1)
            for row, tokens in enumerate(new_tokens.cpu()):
                response = cut_after_eos(tokens, eos_ids)
                if logprobs is None:
                    yield response, None
                else:
                    yield response, logprobs[row, : len(response)].cpu()


def decode_responses(
    tokenizer: PreTrainedTokenizerBase, responses: Sequence[torch.Tensor]
) -> list[str]:
    """The text of each response, special tokens (EOS, padding) left out."""
    return tokenizer.batch_decode([r.tolist() for r in responses], skip_special_tokens=True)


# dial generate


def read_prompt_records(
    path: str | Path, required: Sequence[str] = (), response_field: str | None = None
) -> list[dict[str, Any]]:
    """Records with a non-empty text ``prompt`` (and the ``required`` fields).

    ``response_field``: fail on a record that already has it (the output would overwrite it).
    """
    file = str(path)
    records = read_records(path)
    for index, record in enumerate(records):
        for name in ("prompt", *required):
            if name not in record:
                raise DataError("missing", file=file, record=index, field=name)
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise DataError("must be non-empty text", file=file, record=index, field="prompt")
        if response_field is not None and response_field in record:
            raise DataError(
                "the record already has this field; choose another with --response-field",
                file=file,
                record=index,
                field=response_field,
            )
    return records


def _resume_point(output: Path, records: Sequence[dict[str, Any]]) -> int:
    """How many records ``output`` already answers, after checking they are this input's.

    A last line cut off by a crash (no final newline) is removed.
    """
    if not output.exists():
        return 0
    data = output.read_bytes()
    complete = data.rfind(b"\n") + 1
    try:
        lines = data[:complete].decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", file=str(output)) from exc
    if len(lines) > len(records):
        raise DataError(
            f"holds {len(lines)} records but the input has {len(records)}; it is another run's "
            "output (remove it or choose another --output)",
            file=str(output),
        )
    for index, line in enumerate(lines):
        try:
            written = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", file=str(output), record=index) from exc
        if not isinstance(written, dict) or written.get("prompt") != records[index]["prompt"]:
            raise DataError(
                "differs from the input's prompt; the file is another run's output (remove it "
                "or choose another --output)",
                file=str(output),
                record=index,
                field="prompt",
            )
    if complete < len(data):
        with output.open("r+b") as handle:
            handle.truncate(complete)
    return len(lines)


def _vllm_available() -> bool:
    try:
        importlib.import_module("vllm")
    except Exception:  # a broken install is as good as none
        return False
    return True


def resolve_backend(name: str) -> str:
    """``auto`` -> ``vllm`` when it imports and a GPU is present, else ``transformers``."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if torch.cuda.is_available() and _vllm_available() else "transformers"
    if name == "vllm" and not _vllm_available():
        raise ConfigError("backend vllm: the vllm package does not import (pip install vllm)")
    return name


class _TransformersGenerator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model, self.tokenizer = load_policy(
            args.model, args.adapter, args.precision, args.trust_remote_code
        )
        self.args = args

    def __call__(self, queries: Sequence[torch.Tensor], seed: int) -> list[str]:
        args = self.args
        responses = sample_responses(
            self.model,
            self.tokenizer,
            queries,
            args.max_new_tokens,
            do_sample=args.sample,
            batch_size=len(queries),
            temperature=args.temperature,
            seed=seed,
        )
        return decode_responses(self.tokenizer, responses)


class _VLLMGenerator:
    """vLLM's offline engine on the same query ids; the adapter through a ``LoRARequest``."""

    # LoRA ranks vLLM's kernels are built for; the engine needs one at least the adapter's.
    LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)

    def __init__(self, args: argparse.Namespace, path: str) -> None:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        engine: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "dtype": str(PRECISIONS[args.precision]).removeprefix("torch."),
            "seed": args.seed,
            "trust_remote_code": args.trust_remote_code,
        }
        self.lora = None
        if args.adapter is not None:
            folder = find_adapter(args.adapter)
            rank = json.loads((folder / ADAPTER_CONFIG).read_text()).get("r", 8)
            engine["enable_lora"] = True
            engine["max_lora_rank"] = next((r for r in self.LORA_RANKS if r >= rank), rank)
            self.lora = LoRARequest("adapter", 1, str(folder))
        self.llm = LLM(**engine)
        self.params = SamplingParams(
            n=1,
            temperature=args.temperature if args.sample else 0.0,
            top_p=1.0,
            max_tokens=args.max_new_tokens,
            skip_special_tokens=True,
        )

    def __call__(self, queries: Sequence[torch.Tensor], seed: int) -> list[str]:
        prompts = [{"prompt_token_ids": q.tolist()} for q in queries]
        outputs = self.llm.generate(prompts, self.params, lora_request=self.lora, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``dial generate`` and ``dial rl-eval`` share."""
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="most tokens per response (one that reaches it has no EOS; default: %(default)s)",
    )
    parser.add_argument(
        "--max-prompt-length",
        type=int,
        default=None,
        help="most tokens per query after the chat template; a longer query keeps its end, "
        "where the generation prompt is (unset: no limit)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="prompts per generate call (and per write; default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="weight precision (default: %(default)s)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own code to run"
    )


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dial generate`` to ``parser``."""
    parser.add_argument(
        "--model", required=True, help="a short name from `dial models`, a model folder or hub id"
    )
    parser.add_argument(
        "--adapter", default=None, help="a peft LoRA adapter folder (or `dial rl` run) on top"
    )
    parser.add_argument(
        "--data", required=True, help="records with a 'prompt' field (JSON, JSONL, CSV, Parquet)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="JSONL: each record with its response; an existing file is resumed after its last "
        "complete line (its prompts must match the data's)",
    )
    parser.add_argument(
        "--response-field",
        default="response",
        help="the output field for the response (default: %(default)s)",
    )
    add_decoding_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sample", dest="sample", action="store_true", help="sample (--temperature, --seed)"
    )
    mode.add_argument(
        "--greedy", dest="sample", action="store_false", help="greedy decoding (the default)"
    )
    parser.set_defaults(sample=False)
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature; no top-k, top-p or other change to the distribution "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed; a resumed run draws the same (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: vLLM when it imports and a GPU is present, else transformers "
        "(default: %(default)s)",
    )


def check_decoding_arguments(args: argparse.Namespace) -> None:
    """Fail fast on a non-positive length or batch size."""
    for name in ("max_new_tokens", "batch_size", "max_prompt_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_output_file(output: str | Path, data: str | Path) -> Path:
    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"output {output} is a folder; give a file name")
    if path.resolve() == Path(data).resolve():
        raise ConfigError(f"output {output} is the data file itself")
    return path


def run_generate(args: argparse.Namespace) -> int:
    """Run ``dial generate``: append ``{prompt, response, ...the record's other fields}`` lines.

    Each batch is written (and synced) as soon as it is generated, so a crash loses at most
    the batch in progress; a rerun checks that the lines already written answer the same
    prompts and generates the rest. The batch starting at record ``k`` samples with seed
    ``seed + k`` (transformers backend), so a run resumed after a crash between two batches
    draws what an unbroken one would have.
    """
    check_decoding_arguments(args)
    if args.sample and not args.temperature > 0:
        raise ConfigError(f"--temperature must be positive, got {args.temperature}")
    output = check_output_file(args.output, args.data)
    records = read_prompt_records(args.data, response_field=args.response_field)
    done = _resume_point(output, records)
    if done == len(records):
        print(f"{output} already holds all {done} responses")
        return 0
    if done:
        print(f"resuming: {done} of {len(records)} responses already in {output}")
    backend = resolve_backend(args.backend)
    if args.adapter is not None:
        find_adapter(args.adapter)
    if backend == "vllm":
        tokenizer, resolved = load_policy_tokenizer(args.model, args.trust_remote_code)
        if resolved.is_random_init:
            raise ConfigError(f"{args.model} has no weights on disk for vLLM; use transformers")
        generator: Any = _VLLMGenerator(args, resolved.name_or_path)
    else:
        generator = _TransformersGenerator(args)
        tokenizer = generator.tokenizer
    queries = encode_queries(
        tokenizer, [r["prompt"] for r in records[done:]], args.max_prompt_length
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as handle:
        for start in range(done, len(records), args.batch_size):
            batch = records[start : start + args.batch_size]
            texts = generator(queries[start - done : start - done + len(batch)], args.seed + start)
            lines = []
            for record, text in zip(batch, texts, strict=True):
                row = {"prompt": record["prompt"], args.response_field: text}
                row.update((k, v) for k, v in record.items() if k != "prompt")
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
    print(
        f"wrote {len(records) - done} responses to {output} with {backend} "
        f"({queries.truncated} queries cut to --max-prompt-length)"
    )
    return 0
