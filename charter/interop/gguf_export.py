"""Export a Charter checkpoint as a GGUF file, so llama.cpp (and everything built on it) runs it.

`charter export gguf MODEL_DIR --out FILE [--dtype f32|f16|bf16|q8_0]` is the inverse of
`gguf_import.py`, and leans on the same knowledge:

- metadata: `general.architecture` ("llama", or "qwen2" for a Qwen2 checkpoint) and the
  `{arch}.*` keys the importer reads, from `config.json`;
- tokenizer: the vocabulary in id order with llama.cpp's token types (CONTROL for special added
  tokens, USER_DEFINED for other added tokens), the pre-tokeniser's llama.cpp name, and merges,
  special token ids and chat template read by the `gguf` package's `SpecialVocab`, as
  llama.cpp's own converter does. llama.cpp's converter names a pre-tokeniser by hashing the
  tokens of a test string, which identifies one published vocabulary, never a newly trained
  one; so we match the tokenizer's pre-tokeniser itself against the importer's table, whose
  names are all ones llama.cpp accepts (a test loads each in llama.cpp) and every one we write
  is one we read back. Charter's own tokenizers (the Llama-3 split) get "llama-bpe", SmolLM2's
  (digits split off, then GPT-2's split) "smollm", a plain byte-level BPE as `tokenizers` and
  transformers make it (GPT-2's split) "gpt-2", Qwen2's "qwen2"; any other is refused, naming
  it. The only normaliser allowed is the one the pre-tokeniser's vocabulary is published with
  (Qwen2's NFC), which llama.cpp's own converter drops too: Charter tokenises before llama.cpp
  sees the ids, so only other llama.cpp tools see the difference, on text not already NFC;
- tensors: renamed with gguf's HF↔GGUF name map, a Llama's Q/K rows permuted into llama.cpp's
  RoPE order (`permute_rope_rows`, undone by the importer's `unpermute_rope_rows`), norms and
  biases kept in F32 (as llama.cpp does), everything else in the chosen type.

The file is written beside its destination and renamed into place, so a failed export never
leaves a partial file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as QuantType
from gguf import LlamaFileType, TokenType

from charter.checkpoint import hf_tensor_name, load_checkpoint, load_tokenizer
from charter.config import ModelConfig
from charter.files import resolve_directory
from charter.interop.gguf_import import (
    ARCHITECTURES,
    NORMALIZERS,
    PRE_TOKENIZERS,
    permuted_rope_heads,
)
from charter.model import Transformer
from charter.tokenizer import Tokenizer

# --dtype → the type of every matrix, and the file type llama.cpp reports for it.
EXPORT_TYPES = {
    "f32": (QuantType.F32, LlamaFileType.ALL_F32),
    "f16": (QuantType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (QuantType.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (QuantType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


class GGUFExportError(ValueError):
    """A checkpoint that cannot be written as a GGUF file llama.cpp would run identically."""


def permute_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder a Q or K projection's output rows (out, in) into llama.cpp's RoPE order.

    Hugging Face Llama rotates the pairs (x_i, x_{i+D/2}) of each head; llama.cpp rotates adjacent
    pairs (x_{2i}, x_{2i+1}). Reading each head's rows as two halves (2, D/2) and interleaving
    them puts every rotated pair side by side; `unpermute_rope_rows` is the inverse.
    """
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    halves = weight.reshape(n_heads, 2, head_dim // 2, in_features)  # (H, 2, D/2, d)
    return halves.transpose(1, 2).reshape(out_features, in_features)  # (H·D/2·2, d)


# ---- tokenizer ----


def _splitting(pre_tokenizer: Any) -> Any:
    """A pre-tokeniser's settings without `trim_offsets`, which changes offsets, never splits."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "trim_offsets"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(pre_tokenizer.__getstate__())) if pre_tokenizer else None


def _known_pre_tokenizer(tokenizer: Tokenizer) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokeniser (the first the importer maps to it)."""
    ours = _splitting(tokenizer.backend.pre_tokenizer)
    matches = (name for name, build in PRE_TOKENIZERS.items() if _splitting(build()) == ours)
    return next(matches, None)


def pre_tokenizer_name(tokenizer: Tokenizer, source: Path) -> str:
    """`_known_pre_tokenizer`, or an error naming the pre-tokeniser."""
    name = _known_pre_tokenizer(tokenizer)
    if name is not None:
        return name
    ours = _splitting(tokenizer.backend.pre_tokenizer)
    raise GGUFExportError(
        f"{source}/tokenizer.json: its pre-tokeniser {json.dumps(ours)} matches none llama.cpp "
        f"implements that Charter knows ({', '.join(PRE_TOKENIZERS)})"
    )


def _same(a: Any, b: Any) -> bool:
    """Whether two `tokenizers` components have the same settings."""
    return json.loads(a.__getstate__()) == json.loads(b.__getstate__())


def check_byte_level_bpe(tokenizer: Tokenizer, source: Path) -> None:
    """llama.cpp's "gpt2" tokenizer is a byte-level BPE with no normaliser (but its
    pre-tokeniser's own, `NORMALIZERS`); refuse anything else."""
    description = json.loads(tokenizer.backend.to_str())
    model, decoder = description.get("model") or {}, description.get("decoder") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or decoder.get("type") != "ByteLevel"
    ):
        raise GGUFExportError(
            f"{source}/tokenizer.json: only byte-level BPE tokenizers can be exported (model "
            f"{model.get('type')!r}, decoder {decoder.get('type')!r})"
        )
    normalizer = tokenizer.backend.normalizer
    expected = NORMALIZERS.get(_known_pre_tokenizer(tokenizer))
    if normalizer is not None and not (expected and _same(normalizer, expected())):
        raise GGUFExportError(
            f"{source}/tokenizer.json: a normaliser ({description['normalizer'].get('type')}) "
            "has no llama.cpp equivalent"
        )


def vocabulary(tokenizer: Tokenizer, vocab_size: int, source: Path) -> tuple[list[str], list[int]]:
    """Tokens in id order and their llama.cpp types, padded with unused tokens to `vocab_size`
    rows (the embedding may have more rows than the tokenizer has tokens; llama.cpp needs one
    token per row)."""
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)  # token → id
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise GGUFExportError(f"{source}/tokenizer.json: token ids are not 0…{len(vocab) - 1}")
    if len(vocab) > vocab_size:
        raise GGUFExportError(
            f"{source}: the tokenizer has {len(vocab)} tokens but the embedding only "
            f"{vocab_size} rows"
        )
    added = tokenizer.backend.get_added_tokens_decoder()  # id → AddedToken
    tokens = sorted(vocab, key=vocab.get)
    types = [
        (TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        if i in added
        else TokenType.NORMAL
        for i in range(len(tokens))
    ]
    padding = range(len(tokens), vocab_size)
    return tokens + [f"[PAD{i}]" for i in padding], types + [TokenType.UNUSED] * len(padding)


def check_tokenizer(source: Path) -> Tokenizer:
    """The tokenizer of checkpoint `source`, if llama.cpp can tokenise as it does; refused with
    a `GGUFExportError` otherwise. Cheap: no weights are read."""
    tokenizer = load_tokenizer(source)
    check_byte_level_bpe(tokenizer, source)
    pre_tokenizer_name(tokenizer, source)
    return tokenizer


def add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: Tokenizer, config: ModelConfig, source: Path
) -> None:
    tokens, types = vocabulary(tokenizer, config.vocab_size, source)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, source))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(source, load_merges=True, n_vocab=len(tokens))
    # Charter never adds BOS or EOS when encoding; llama.cpp must not either, unless told to.
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


# ---- model ----


def add_metadata(writer: gguf.GGUFWriter, config: ModelConfig, name: str, dtype: str) -> None:
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    tensor_type, file_type = EXPORT_TYPES[dtype]
    writer.add_file_type(file_type)
    if tensor_type not in (QuantType.F32, QuantType.F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def gguf_tensors(model: Transformer) -> dict[str, np.ndarray]:
    """The model's weights under GGUF names, fp32 in PyTorch's (out, in) layout, a Llama's Q/K
    permuted."""
    config = model.config
    names = gguf.get_tensor_name_map(ARCHITECTURES[config.model_type], config.num_hidden_layers)
    tensors = {}
    for name, weight in model.state_dict().items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        heads = permuted_rope_heads(hf_tensor_name(name), config)
        if heads is not None:
            weight = permute_rope_rows(weight, heads)
        gguf_name = names.get_name(hf_tensor_name(name), try_suffixes=(".weight", ".bias"))
        tensors[gguf_name] = weight.detach().float().numpy()
    return tensors


def add_tensor(writer: gguf.GGUFWriter, name: str, weight: np.ndarray, dtype: str) -> None:
    tensor_type = EXPORT_TYPES[dtype][0]
    if weight.ndim == 1 or tensor_type == QuantType.F32:  # norms, biases: F32, as in llama.cpp
        writer.add_tensor(name, weight)
        return
    try:
        data = gguf.quants.quantize(weight, tensor_type)
    except gguf.quants.QuantError as e:  # rows that are not a whole number of blocks
        block = gguf.GGML_QUANT_SIZES[tensor_type][0]
        raise GGUFExportError(
            f"tensor {name!r} cannot be stored as {dtype} ({e}): its rows of {weight.shape[-1]} "
            f"values are not whole {block}-value blocks; export as f16, bf16 or f32"
        ) from e
    writer.add_tensor(name, data, raw_dtype=tensor_type)


def export_gguf(
    model_dir: str | Path, out: str | Path, dtype: str = "f32", progress: bool = True
) -> Path:
    """Write checkpoint `model_dir` as the GGUF file `out`; return `out`."""
    if dtype not in EXPORT_TYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EXPORT_TYPES)}")
    source = resolve_directory(model_dir)
    tokenizer = check_tokenizer(source)  # before the weights, so a refusal comes at once
    model = load_checkpoint(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, model.config.model_type)  # its GGUF name too
    try:
        add_metadata(writer, model.config, Path(model_dir).resolve().name, dtype)
        add_tokenizer(writer, tokenizer, model.config, source)
        for name, weight in gguf_tensors(model).items():
            add_tensor(writer, name, weight, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=progress)
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out
