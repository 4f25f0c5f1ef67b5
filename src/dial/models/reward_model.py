"""The reward model: backbone -> pooled embedding h -> linear head r = wᵀh + b.

Saved as a ``save_pretrained``-style folder::

    dial_config.json            base model, architecture, pooling, head size, LoRA settings
    reward_head.safetensors     the head
    adapter_config.json         LoRA adapter (peft), when trained with LoRA
    adapter_model.safetensors
    backbone/                   the whole backbone, when fully fine-tuned or randomly initialised
    tokenizer files
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from dial import __version__
from dial.config import ModelConfig
from dial.errors import ConfigError, DialError
from dial.models.pooling import pool, resolve_pooling
from dial.models.registry import ResolvedModel, resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# LoRA on every attention and MLP projection; peft's "all-linear" for other architectures.
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


@dataclass
class RewardModelSpec:
    """What is needed to rebuild a saved reward model (``dial_config.json``)."""

    base_model: str
    architecture: str
    pooling: str
    num_labels: int
    precision: str
    padding_side: str
    lora: dict[str, Any] | None
    backbone_saved: bool
    lm_head: bool = False
    dial_version: str = __version__


class RewardOutput(NamedTuple):
    """Rewards ([N], or [N, num_labels]), pooled embeddings [N, H] (float32; the head's input,
    or the pooled hidden states of the layer asked for), and the mean next-token NLL over the
    positions given ``lm_labels`` (None without them)."""

    rewards: torch.Tensor
    embeddings: torch.Tensor
    lm_loss: torch.Tensor | None


class RewardModel(nn.Module):
    """A backbone, a pooling rule and a linear reward head.

    With ``spec.lm_head`` the backbone is a causal LM whose trunk feeds both its LM head and the
    reward head, so an auxiliary next-token loss trains the same trunk as the reward.
    """

    def __init__(self, backbone: nn.Module, spec: RewardModelSpec, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.head = nn.Linear(hidden_size, spec.num_labels)
        trunk = self._trunk()
        self._takes_position_ids = "position_ids" in inspect.signature(trunk.forward).parameters

    @property
    def hidden_size(self) -> int:
        return self.head.in_features

    def _base(self) -> nn.Module:
        """The transformers model (inside the peft wrapper when there is one)."""
        return self.backbone.get_base_model() if self.spec.lora else self.backbone

    def _trunk(self) -> nn.Module:
        """The module that maps tokens to final (normed) hidden states."""
        return self._base().get_decoder() if self.spec.lm_head else self._base()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        lm_labels: torch.Tensor | None = None,
        embedding_layer: int | None = None,
    ) -> RewardOutput:
        """Score every sequence; with `lm_labels` (-100 where no token is predicted) also the
        next-token loss, computed on the rows that have labels only. The embeddings are the
        head's input, or with `embedding_layer` the same pooling of that layer's hidden states
        (0: the token embeddings, L: the last layer, negative: counted from the end)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self._takes_position_ids:
            # Count positions from the first real token, so left padding changes nothing.
            kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        outputs = self._trunk()(**kwargs, output_hidden_states=embedding_layer is not None)
        hidden = outputs.last_hidden_state
        head_input = pool(hidden, attention_mask, self.spec.pooling).float()
        rewards = self.head(head_input)
        if self.spec.num_labels == 1:
            rewards = rewards.squeeze(-1)
        embeddings = head_input
        if embedding_layer is not None:
            layer = outputs.hidden_states[embedding_layer]
            embeddings = pool(layer, attention_mask, self.spec.pooling).float()
        lm_loss = None if lm_labels is None else self._lm_loss(hidden, lm_labels)
        return RewardOutput(rewards, embeddings, lm_loss)

    @property
    def num_layers(self) -> int:
        """Transformer layers of the backbone (hidden states 0..num_layers)."""
        return self._base().config.num_hidden_layers

    def check_embedding_layer(self, layer: int | None, option: str) -> None:
        """Raise ConfigError unless `layer` names one of the backbone's hidden states."""
        n = self.num_layers
        if layer is not None and not -(n + 1) <= layer <= n:
            raise ConfigError(
                f"{option} = {layer}: this backbone has hidden states 0..{n} "
                f"(or -{n + 1}..-1 from the end)"
            )

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean NLL of token t+1 given tokens ..t over the labelled positions."""
        if not self.spec.lm_head:
            raise DialError("a next-token loss needs a decoder with its LM head (lm_head: true)")
        rows = (labels != -100).any(dim=1)
        logits = self._base().get_output_embeddings()(hidden[rows, :-1]).float()
        targets = labels[rows, 1:]
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )

    def save_pretrained(self, folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the folder described in the module docstring (safetensors only)."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        if self.spec.lora is not None:
            self.backbone.save_pretrained(target, safe_serialization=True)
        if self.spec.backbone_saved:
            base = self._base()
            if self.spec.lora:
                # The adapter is saved beside; the backbone folder holds the unadapted weights.
                state = {
                    k.replace(".base_layer", ""): v
                    for k, v in base.state_dict().items()
                    if "lora_" not in k
                }
                base.save_pretrained(target / "backbone", state_dict=state)
            else:
                base.save_pretrained(target / "backbone")
        head = {k: v.detach().float().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(target / "reward_head.safetensors"))
        tokenizer.save_pretrained(target)
        (target / "dial_config.json").write_text(json.dumps(asdict(self.spec), indent=2) + "\n")

    def load_trained_weights(self, folder: str | Path) -> None:
        """Restore the weights written by :meth:`save_pretrained` into this model, in place."""
        source = Path(folder)
        self.head.load_state_dict(load_file(str(source / "reward_head.safetensors")))
        if self.spec.backbone_saved:
            base = self._base()
            state = load_file(str(source / "backbone" / "model.safetensors"))
            if self.spec.lora:
                names = {name for name, _ in base.named_parameters()}
                state = {_base_layer_name(names, k): v for k, v in state.items()}
            missing, unexpected = base.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if "lora_" not in k]:
                raise DialError(f"{source}/backbone does not match the model: {missing[:3]}")
        if self.spec.lora is not None:
            from peft import set_peft_model_state_dict

            adapter = load_file(str(source / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(self.backbone, adapter)
            if result.unexpected_keys:
                raise DialError(f"{source} adapter does not match: {result.unexpected_keys[:3]}")

    def init_from(self, folder: str | Path) -> None:
        """Start from the trained weights of another reward-model folder built the same way.

        The folder's ``dial_config.json`` must name the same base model, pooling, head size
        and adapter settings as this model (otherwise its weights would not mean the same).
        """
        source = Path(folder)
        config_path = source / "dial_config.json"
        if not config_path.is_file():
            raise DialError(f"model.init_from {source} is not a dial reward-model folder")
        saved = json.loads(config_path.read_text())
        mine = asdict(self.spec)
        differing = [
            key
            for key in ("base_model", "pooling", "num_labels", "lora", "backbone_saved")
            if saved.get(key) != mine[key]
        ]
        if differing:
            key = differing[0]
            raise DialError(
                f"model.init_from {source} was built with {key}={saved.get(key)!r}, this run "
                f"with {mine[key]!r}"
            )
        self.load_trained_weights(source)


def _base_layer_name(names: set[str], key: str) -> str:
    """Map a plain weight name onto a LoRA-wrapped module's ``base_layer`` name where needed."""
    module_path, _, leaf = key.rpartition(".")
    wrapped = f"{module_path}.base_layer.{leaf}"
    return wrapped if wrapped in names else key


def default_lora_targets(model_type: str) -> list[str] | str:
    return DEFAULT_LORA_TARGETS.get(model_type, "all-linear")


def load_tokenizer(
    name_or_path: str | Path, padding_side: str, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code
    )
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _without_dropout(config: PretrainedConfig) -> PretrainedConfig:
    """A copy of `config` with every dropout probability set to 0."""
    config = copy.deepcopy(config)
    for key, value in config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, 0.0)
    return config


def _load_backbone(
    resolved: ResolvedModel,
    dtype: torch.dtype,
    lm_head: bool,
    trust_remote_code: bool,
    disable_dropout: bool = False,
) -> nn.Module:
    """The transformers model: the bare trunk, or the causal LM (trunk + LM head)."""
    if lm_head and resolved.architecture != "decoder":
        raise DialError(
            f"an LM head needs a decoder; {resolved.name_or_path} is an {resolved.architecture}"
        )
    auto = AutoModelForCausalLM if lm_head else AutoModel
    config = resolved.config or AutoConfig.from_pretrained(
        resolved.name_or_path, trust_remote_code=trust_remote_code
    )
    if disable_dropout:
        config = _without_dropout(config)
    if resolved.is_random_init:
        backbone = auto.from_config(config, dtype=dtype)
    else:
        try:
            backbone = auto.from_pretrained(
                resolved.name_or_path,
                config=config,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
        except OSError as exc:  # no safetensors weights, or the hub unreachable
            raise DialError(
                f"cannot load the weights of {resolved.name_or_path}: {exc} (dial reads only "
                "safetensors weights: a pickled pytorch_model.bin could run code when loaded; "
                "convert it with safetensors.torch.save_file where you trust it)"
            ) from exc
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # BERT's pooler is unused: pooling is ours
    return backbone


def _apply_lora(backbone: nn.Module, config: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules or default_lora_targets(backbone.config.model_type)
    lora = {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": targets,
    }
    if config.lora_layers is not None:
        n = backbone.config.num_hidden_layers
        wrong = [layer for layer in config.lora_layers if not 0 <= layer < n]
        if wrong or not config.lora_layers:
            raise ConfigError(
                f"model.lora_layers {config.lora_layers}: give layers between 0 and {n - 1} "
                f"(this backbone has {n})"
            )
        lora["layers_to_transform"] = sorted(set(config.lora_layers))
    try:
        return get_peft_model(backbone, LoraConfig(bias="none", **lora)), lora
    except ValueError as exc:  # peft: target modules not found in the model
        raise ConfigError(f"model.lora_target_modules {targets}: {exc}") from exc


def build_reward_model(
    config: ModelConfig, *, lm_head: bool = False
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """A fresh reward model (pretrained backbone, new head, optional LoRA) and its tokenizer.

    With `lm_head` a decoder keeps its LM head (for auxiliary next-token losses). Seed torch
    before calling: the head (and a tiny backbone) are initialised randomly.
    """
    resolved = resolve_model(
        config.name, cache_dir=config.cache_dir, trust_remote_code=config.trust_remote_code
    )
    tokenizer = load_tokenizer(resolved.name_or_path, config.padding_side, config.trust_remote_code)
    backbone = _load_backbone(
        resolved,
        DTYPES[config.precision],
        lm_head,
        config.trust_remote_code,
        disable_dropout=config.disable_dropout,
    )
    hidden_size = backbone.config.hidden_size
    lora = None
    if config.use_lora:
        backbone, lora = _apply_lora(backbone, config)
    spec = RewardModelSpec(
        base_model=config.name,
        architecture=resolved.architecture,
        pooling=resolve_pooling(config.pooling, resolved.architecture),
        num_labels=config.num_labels,
        precision=config.precision,
        padding_side=config.padding_side,
        lora=lora,
        backbone_saved=resolved.is_random_init or not config.use_lora,
        lm_head=lm_head,
    )
    model = RewardModel(backbone, spec, hidden_size)
    nn.init.normal_(model.head.weight, std=1.0 / math.sqrt(hidden_size + 1))
    nn.init.zeros_(model.head.bias)
    return model, tokenizer


def load_reward_model(
    folder: str | Path,
    *,
    trainable: bool = False,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """Rebuild a reward model saved by :meth:`RewardModel.save_pretrained`.

    Without ``trainable`` the model is for inference: a LoRA adapter is merged into the
    backbone's weights (rewards equal the unmerged ones to float rounding, at fewer matmuls).
    """
    source = Path(folder)
    config_path = source / "dial_config.json"
    if not config_path.is_file():
        raise DialError(f"{source} is not a dial reward-model folder (no dial_config.json)")
    try:
        spec = RewardModelSpec(**json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise DialError(f"{config_path} is not a valid dial model config ({exc})") from exc
    dtype = DTYPES[spec.precision]
    if spec.backbone_saved:
        resolved = ResolvedModel(str(source / "backbone"), spec.architecture, False, None)
    else:
        resolved = resolve_model(
            spec.base_model, cache_dir=cache_dir, trust_remote_code=trust_remote_code
        )
    backbone = _load_backbone(resolved, dtype, spec.lm_head, trust_remote_code)
    if spec.lora is not None:
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, str(source), is_trainable=trainable)
        if not trainable:  # inference only: the adapters folded into the weights, one matmul each
            backbone.merge_adapter()
    model = RewardModel(backbone, spec, backbone.config.hidden_size)
    head_path = source / "reward_head.safetensors"
    if not head_path.is_file():
        raise DialError(f"{source} has no reward_head.safetensors")
    model.head.load_state_dict(load_file(str(head_path)))
    tokenizer = load_tokenizer(source, spec.padding_side, trust_remote_code)
    if not trainable:
        model.eval()
    return model, tokenizer
