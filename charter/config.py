"""Model configuration: a dataclass with LlamaConfig field names, model-family presets, and the
parameter-count and FLOPs-per-token formulas.

Field names follow `transformers.LlamaConfig` so that `config.json` is readable by Hugging Face
tools as-is, and any Llama `config.json` is readable by us. Two model families share the one
decoder: Llama, and Qwen2 (Llama with biases on the q/k/v projections, `model_type` "qwen2").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# The Hugging Face architectures a checkpoint may be: the decoder with its LM head (a policy), or
# with a linear score head read at the last token (a reward model, a judge: heads.py).
CAUSAL_LM = "LlamaForCausalLM"
SEQUENCE_CLASSIFICATION = "LlamaForSequenceClassification"
ARCHITECTURES = (CAUSAL_LM, SEQUENCE_CLASSIFICATION)

# config.json's `model_type` → the prefix of its architectures' class names. `architecture` keeps
# Llama's spelling of the head whatever the family; config.json gets the family's own
# (Qwen2ForCausalLM), since that is the class transformers builds.
FAMILIES = {"llama": "Llama", "qwen2": "Qwen2"}


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None  # None → hidden_size // num_attention_heads
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    architecture: str = CAUSAL_LM  # the head, one of ARCHITECTURES (Llama's names)
    num_labels: int = 1  # outputs of the score head (SEQUENCE_CLASSIFICATION only)
    model_type: str = "llama"  # the family, one of FAMILIES

    def __post_init__(self) -> None:
        if self.model_type not in FAMILIES:
            raise ValueError(
                f"model_type {self.model_type!r} unsupported; choose from {', '.join(FAMILIES)}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture {self.architecture!r} unsupported; choose from "
                f"{', '.join(ARCHITECTURES)}"
            )
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not divisible by "
                    f"num_attention_heads {self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def qkv_bias(self) -> bool:
        """Whether the q, k and v projections have biases (Qwen2's; never o_proj or the MLP)."""
        return self.model_type == "qwen2"

    @property
    def hf_architecture(self) -> str:
        """config.json's `architectures` entry: the head under the family's class name."""
        return FAMILIES[self.model_type] + self.architecture.removeprefix("Llama")

    # ---- Hugging Face config.json ----

    def to_hf_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["architecture"], d["num_labels"]
        if self.architecture == SEQUENCE_CLASSIFICATION:
            # transformers counts the labels of `id2label` (and reads `num_labels` without it).
            labels = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d.update(
                num_labels=self.num_labels,
                id2label=labels,
                label2id={name: int(i) for i, name in labels.items()},
            )
        d.update(
            architectures=[self.hf_architecture],
            hidden_act="silu",
            rope_scaling=None,
            torch_dtype="float32",
        )
        if self.model_type == "qwen2":  # its biases are fixed by the family, not a flag
            d.update(use_sliding_window=False, sliding_window=None)
        else:
            d.update(attention_bias=False, mlp_bias=False)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a Llama or Qwen2 `config.json` (transformers 4 or 5 layout); refuse what we
        cannot run."""
        model_type = d.get("model_type", "llama")
        if model_type not in FAMILIES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not an architecture Charter runs "
                f"({', '.join(FAMILIES)})"
            )
        heads = {FAMILIES[model_type] + a.removeprefix("Llama"): a for a in ARCHITECTURES}
        architectures = d.get("architectures") or [next(iter(heads))]
        if len(architectures) != 1 or architectures[0] not in heads:
            raise ValueError(
                f"{source}: architectures {architectures} unsupported; Charter reads "
                f"{' or '.join(heads)} for model_type {model_type!r}"
            )
        if d.get("use_sliding_window"):
            raise ValueError(
                f"{source}: use_sliding_window=true (sliding-window attention) is not supported"
            )
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act {d['hidden_act']!r} unsupported (only silu)")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ValueError(f"{source}: {flag}=true is not supported")
        # transformers 5 moved rope_theta/rope_scaling into rope_parameters.
        rope = dict(d.get("rope_parameters") or {})
        rope_type = (
            rope.get("rope_type")
            or (d.get("rope_scaling") or {}).get("rope_type")
            or ((d.get("rope_scaling") or {}).get("type"))
        )
        if rope_type not in (None, "default"):
            raise ValueError(f"{source}: rope scaling {rope_type!r} is not supported")
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        names = {f.name for f in dataclasses.fields(cls)} - {"architecture", "num_labels"}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["model_type"] = model_type
        kwargs["architecture"] = heads[architectures[0]]
        if kwargs["architecture"] == SEQUENCE_CLASSIFICATION:
            kwargs["num_labels"] = _num_labels(d, source)
        kwargs["rope_theta"] = float(theta)
        kwargs.setdefault("num_key_value_heads", d.get("num_attention_heads"))
        kwargs.setdefault("tie_word_embeddings", False)  # LlamaConfig's default, not ours
        missing = [
            k
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
            )
            if k not in d
        ]
        if missing:
            raise ValueError(f"{source}: missing required field(s) {', '.join(missing)}")
        return cls(**kwargs)

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return (
            [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)
        )


def _num_labels(d: dict[str, Any], source: str) -> int:
    """A classifier's label count as transformers reads it: `id2label`'s length, else
    `num_labels`, else 2 (PretrainedConfig's default)."""
    stated = d.get("num_labels")
    if d.get("id2label") is None:
        return 2 if stated is None else stated
    if stated is not None and stated != len(d["id2label"]):
        raise ValueError(
            f"{source}: num_labels {stated} disagrees with id2label's {len(d['id2label'])} labels"
        )
    return len(d["id2label"])


# ---- Presets ----
#
# One dial, `depth`, sets a model's size the way nanochat does: width = 64·depth, one 64-wide
# head per 64 of width, a quarter as many KV heads (GQA), SwiGLU hidden ≈ 8/3·width rounded up
# to a multiple of 64.
# The tiers go from fast and cheap to slow and capable on a 2-core CPU.

TIER_DEPTHS = {"demo": 4, "mid": 8, "large": 12}


def config_for_depth(depth: int, vocab_size: int = 8192, context: int = 1024) -> ModelConfig:
    width = 64 * depth
    heads = depth
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=64 * math.ceil(8 * width / 3 / 64),
        num_hidden_layers=depth,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        max_position_embeddings=context,
    )


def preset(name: str, vocab_size: int = 8192) -> ModelConfig:
    """`micro` is for tests (seconds per test); the tiers are `demo`, `mid` and `large`."""
    if name == "micro":
        return ModelConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    if name not in TIER_DEPTHS:
        raise ValueError(f"unknown preset {name!r}; choose from micro, {', '.join(TIER_DEPTHS)}")
    return config_for_depth(TIER_DEPTHS[name], vocab_size=vocab_size)


PRESETS = ["micro", *TIER_DEPTHS]


# ---- Size and cost formulas ----


def num_parameters(c: ModelConfig, include_embedding: bool = True) -> int:
    d, hd = c.hidden_size, c.head_dim
    attn = d * hd * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)  # q, o, k, v
    if c.qkv_bias:
        attn += hd * (c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * d * c.intermediate_size
    per_layer = attn + mlp + 2 * d  # + two RMSNorm weights
    n = c.num_hidden_layers * per_layer + d  # + final norm
    embedding = c.vocab_size * d
    head = 0 if c.tie_word_embeddings else c.vocab_size * d
    return n + head + (embedding if include_embedding else 0)


def flops_per_token(c: ModelConfig, seq_len: int, training: bool = True) -> float:
    """Matmul FLOPs per token (Kaplan/PaLM accounting): 2 per multiply-add in the forward pass,
    ×3 with the backward pass. The input embedding is a lookup (no FLOPs) but the LM head is a
    matmul whether or not it is tied; attention over a causal context of `seq_len` adds
    2·2·layers·heads·head_dim·seq_len/2 per token in the forward pass.
    """
    d, hd = c.hidden_size, c.head_dim
    per_layer = d * hd * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
    per_layer += 3 * d * c.intermediate_size
    matmul_params = c.num_hidden_layers * per_layer + c.vocab_size * d
    attention = 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len
    forward = 2 * matmul_params + attention
    return float(3 * forward if training else forward)
