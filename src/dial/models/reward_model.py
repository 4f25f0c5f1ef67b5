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

import inspect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from dial import __version__
from dial.config import ModelConfig
from dial.errors import DialError
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
    dial_version: str = __version__


class RewardModel(nn.Module):
    """A backbone, a pooling rule and a linear reward head."""

    def __init__(self, backbone: nn.Module, spec: RewardModelSpec, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.head = nn.Linear(hidden_size, spec.num_labels)
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters

    @property
    def hidden_size(self) -> int:
        return self.head.in_features

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled embeddings h [N, H] (float32)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self._takes_position_ids:
            # Count positions from the first real token, so left padding changes nothing.
            kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(**kwargs).last_hidden_state
        return pool(hidden, attention_mask, self.spec.pooling).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards ([N] for one label, else [N, num_labels]) and embeddings [N, H]."""
        embeddings = self.embed(input_ids, attention_mask, token_type_ids)
        rewards = self.head(embeddings)
        if self.spec.num_labels == 1:
            rewards = rewards.squeeze(-1)
        return rewards, embeddings

    def save_pretrained(self, folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the folder described in the module docstring (safetensors only)."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        if self.spec.lora is not None:
            self.backbone.save_pretrained(target, safe_serialization=True)
        if self.spec.backbone_saved:
            base = self.backbone.get_base_model() if self.spec.lora else self.backbone
            if self.spec.lora:
                # The adapter is saved beside; the backbone folder holds the unadapted weights.
                state = {
                    k.replace(".base_layer", ""): v
                    for k, v in base.state_dict().items()
                    if "lora_" not in k
                }
                base.config.save_pretrained(target / "backbone")
                save_file(
                    {k: v.contiguous() for k, v in state.items()},
                    str(target / "backbone" / "model.safetensors"),
                )
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
            base = self.backbone.get_base_model() if self.spec.lora else self.backbone
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


def _load_backbone(
    resolved: ResolvedModel, dtype: torch.dtype, trust_remote_code: bool
) -> nn.Module:
    if resolved.is_random_init:
        backbone = AutoModel.from_config(resolved.config, dtype=dtype)
    else:
        backbone = AutoModel.from_pretrained(
            resolved.name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
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
    return get_peft_model(backbone, LoraConfig(bias="none", **lora)), lora


def build_reward_model(config: ModelConfig) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """A fresh reward model (pretrained backbone, new head, optional LoRA) and its tokenizer.

    Seed torch before calling: the head (and a tiny backbone) are initialised randomly.
    """
    resolved = resolve_model(
        config.name, cache_dir=config.cache_dir, trust_remote_code=config.trust_remote_code
    )
    tokenizer = load_tokenizer(resolved.name_or_path, config.padding_side, config.trust_remote_code)
    backbone = _load_backbone(resolved, DTYPES[config.precision], config.trust_remote_code)
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
    """Rebuild a reward model saved by :meth:`RewardModel.save_pretrained`."""
    source = Path(folder)
    config_path = source / "dial_config.json"
    if not config_path.is_file():
        raise DialError(f"{source} is not a dial reward-model folder (no dial_config.json)")
    raw = json.loads(config_path.read_text())
    spec = RewardModelSpec(**raw)
    dtype = DTYPES[spec.precision]
    if spec.backbone_saved:
        backbone = AutoModel.from_pretrained(
            str(source / "backbone"), dtype=dtype, use_safetensors=True
        )
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None
    else:
        resolved = resolve_model(
            spec.base_model, cache_dir=cache_dir, trust_remote_code=trust_remote_code
        )
        backbone = _load_backbone(resolved, dtype, trust_remote_code)
    if spec.lora is not None:
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, str(source), is_trainable=trainable)
    model = RewardModel(backbone, spec, backbone.config.hidden_size)
    head_path = source / "reward_head.safetensors"
    if not head_path.is_file():
        raise DialError(f"{source} has no reward_head.safetensors")
    model.head.load_state_dict(load_file(str(head_path)))
    tokenizer = load_tokenizer(source, spec.padding_side, trust_remote_code)
    if not trainable:
        model.eval()
    return model, tokenizer
