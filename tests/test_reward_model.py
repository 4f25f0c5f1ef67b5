"""Pooling, the reward model's forward pass, and the save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dial.config import ModelConfig
from dial.data.records import Example
from dial.data.tokenize import (
    EncodedExample,
    collate,
    encode_examples,
    model_inputs,
    sequence_format,
)
from dial.errors import ConfigError
from dial.evaluation.evaluate import predict
from dial.models.pooling import pool
from dial.models.reward_model import build_reward_model, load_reward_model


def test_pooling_by_hand() -> None:
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool(hidden, right, "last").tolist() == [hidden[0, 1].tolist(), hidden[1, 2].tolist()]
    assert pool(hidden, left, "last").tolist() == [hidden[0, 2].tolist(), hidden[1, 2].tolist()]
    assert pool(hidden, left, "cls").tolist() == [hidden[0, 1].tolist(), hidden[1, 0].tolist()]
    mean = pool(hidden, right, "mean")
    assert torch.allclose(mean[0], (hidden[0, 0] + hidden[0, 1]) / 2)
    assert torch.allclose(mean[1], hidden[1].mean(0))


EXAMPLES = [
    Example("Human: hi there, how are you doing today?\n\nAssistant:", (" fine, thanks", " no")),
    Example("Human: short\n\nAssistant:", (" a much longer answer than the other one", " ok")),
]


def _tiny_model(name: str, seed: int):
    """A fully trainable tiny model in eval mode, its sequence format and EXAMPLES encoded."""
    torch.manual_seed(seed)
    model, tokenizer = build_reward_model(ModelConfig(name=name, use_lora=False))
    model.eval()
    fmt = sequence_format(tokenizer, model.spec.architecture)
    return model, fmt, encode_examples(EXAMPLES, tokenizer, fmt, 64)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_left_and_right_padding_give_the_same_rewards(name: str) -> None:
    model, fmt, data = _tiny_model(name, seed=0)
    outputs = {}
    for side in ("left", "right"):
        batch = collate(data.examples, fmt, side)
        with torch.no_grad():
            outputs[side] = model(**model_inputs(batch)).rewards
    alone = []
    for c in range(2):  # response-major, as in a batch
        for example in data.examples:
            types = [example.token_type_ids[c]] if example.token_type_ids else None
            single = collate([EncodedExample([example.input_ids[c]], types, None)], fmt)
            with torch.no_grad():
                alone.append(model(**model_inputs(single)).rewards)
    assert torch.allclose(outputs["left"], outputs["right"], atol=1e-5)
    assert torch.allclose(outputs["right"], torch.cat(alone), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "use_lora"), [("tiny-llama", True), ("tiny-bert", False), ("minilm", True)]
)
def test_save_and_reload_score_identically(tmp_path: Path, name: str, use_lora: bool) -> None:
    torch.manual_seed(1)
    model, tokenizer = build_reward_model(
        ModelConfig(name=name, use_lora=use_lora, lora_r=4, lora_alpha=8)
    )
    with torch.no_grad():  # move the trainable weights away from their initial values
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    fmt = sequence_format(tokenizer, model.spec.architecture)
    data = encode_examples(EXAMPLES, tokenizer, fmt, 64)
    before = predict(model, data, fmt, with_embeddings=True)
    model.save_pretrained(tmp_path / "rm", tokenizer)
    saved = sorted(p.name for p in (tmp_path / "rm").iterdir())
    assert "reward_head.safetensors" in saved and "dial_config.json" in saved
    assert not [n for n in saved if n.endswith((".bin", ".pt", ".pkl"))]
    assert ("adapter_model.safetensors" in saved) == use_lora
    # reloaded to train on: the same weights, the same computation, the same numbers
    reloaded, reloaded_tokenizer = load_reward_model(tmp_path / "rm", trainable=True)
    reloaded_fmt = sequence_format(reloaded_tokenizer, reloaded.spec.architecture)
    after = predict(reloaded, data, reloaded_fmt, with_embeddings=True)
    assert torch.equal(torch.from_numpy(before.rewards), torch.from_numpy(after.rewards))
    assert torch.equal(torch.from_numpy(before.embeddings), torch.from_numpy(after.embeddings))
    # reloaded for inference: LoRA merged into the weights, equal up to float rounding
    merged, _ = load_reward_model(tmp_path / "rm")
    adapted = [layer for layer in merged.modules() if hasattr(layer, "merged_adapters")]
    assert bool(adapted) == use_lora
    assert all(layer.merged for layer in adapted)
    inferred = predict(merged, data, reloaded_fmt, with_embeddings=True)
    np.testing.assert_allclose(inferred.rewards, before.rewards, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inferred.embeddings, before.embeddings, rtol=1e-5, atol=1e-5)


def test_lora_trains_only_adapters_and_head() -> None:
    model, _ = build_reward_model(ModelConfig(name="minilm", lora_r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "head.weight" in trainable
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if "lora_" in n}
    assert wrapped == {"query", "key", "value", "dense"}


def test_backbone_dropout_is_off_unless_asked() -> None:
    off, _ = build_reward_model(ModelConfig(name="tiny-bert"))
    on, _ = build_reward_model(ModelConfig(name="tiny-bert", disable_dropout=False))
    assert off._base().config.attention_probs_dropout_prob == 0.0
    assert off._base().config.hidden_dropout_prob == 0.0
    assert on._base().config.attention_probs_dropout_prob > 0.0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_embedding_layer_pools_that_layer_and_leaves_the_rewards(name: str) -> None:
    model, fmt, data = _tiny_model(name, seed=2)
    inputs = model_inputs(collate(data.examples, fmt))
    with torch.no_grad():
        plain = model(**inputs)
        hidden = model.backbone(
            **{k: v for k, v in inputs.items() if k != "token_type_ids" or v is not None},
            output_hidden_states=True,
        ).hidden_states
        for layer in (0, 1, -1):
            output = model(**inputs, embedding_layer=layer)
            assert torch.equal(output.rewards, plain.rewards)
            by_hand = pool(hidden[layer], inputs["attention_mask"], model.spec.pooling)
            assert torch.allclose(output.embeddings, by_hand, atol=1e-5)
    assert len(hidden) == model.num_layers + 1 == 3
    assert torch.allclose(
        model(**inputs, embedding_layer=-1).embeddings, plain.embeddings, atol=1e-5
    )
    assert not torch.allclose(model(**inputs, embedding_layer=1).embeddings, plain.embeddings)


def test_lora_layers_wraps_only_those_layers_and_survives_a_reload(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model, tokenizer = build_reward_model(ModelConfig(name="minilm", lora_r=4, lora_layers=[4, 5]))
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert {n.split(".layer.")[1].split(".")[0] for n in lora_names} == {"4", "5"}
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    fmt = sequence_format(tokenizer, model.spec.architecture)
    data = encode_examples(EXAMPLES, tokenizer, fmt, 64)
    before = predict(model, data, fmt)
    model.save_pretrained(tmp_path / "rm", tokenizer)
    reloaded, _ = load_reward_model(tmp_path / "rm", trainable=True)
    assert torch.equal(
        torch.from_numpy(before.rewards), torch.from_numpy(predict(reloaded, data, fmt).rewards)
    )
    reloaded_lora = [n for n, _ in reloaded.named_parameters() if "lora_" in n]
    assert {n.split(".layer.")[1].split(".")[0] for n in reloaded_lora} == {"4", "5"}


@pytest.mark.parametrize("layers", [[6], [-1], []])
def test_lora_layers_outside_the_backbone_are_a_clear_error(layers: list[int]) -> None:
    with pytest.raises(ConfigError, match=r"model.lora_layers .* between 0 and 5"):
        build_reward_model(ModelConfig(name="minilm", lora_layers=layers))
