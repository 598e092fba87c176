"""Checkpoints are Hugging Face Llama directories.

    config.json              LlamaConfig fields
    model.safetensors        HF tensor names (model.layers.0.self_attn.q_proj.weight, …)
    tokenizer.json           + tokenizer_config.json (with the chat template)
    generation_config.json   EOS ids and sampling defaults

Writes are atomic: everything goes to a temporary sibling directory, each file is fsynced, and the
directory is renamed into place, so a crash leaves either the old checkpoint or the new one.
Reads check every tensor against the config and name the file and tensor that is wrong.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from charter.config import ModelConfig
from charter.files import (
    read_json,
    replace_directory,
    resolve_directory,
    temporary_sibling,
    write_json,
)
from charter.model import Transformer
from charter.tokenizer import Tokenizer

# Tensors some HF checkpoints carry that are derived, not learned.
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete, corrupt, or does not match its config."""


def hf_tensor_name(name: str) -> str:
    """Our parameter names are HF's without the `model.` prefix of the decoder stack."""
    return name if name.startswith("lm_head.") else f"model.{name}"


# ---- writing ----


def save_checkpoint(
    model: Transformer, directory: str | Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write `model` (and its tokenizer) as a Hugging Face directory, atomically."""
    directory = Path(directory)
    tmp = temporary_sibling(directory)
    write_checkpoint(tmp, model.config, model.state_dict(), tokenizer)
    replace_directory(tmp, directory)
    return directory


def write_checkpoint(
    directory: Path,
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write the files of a checkpoint into an existing (temporary) directory."""
    write_json(directory / "config.json", config.to_hf_dict())
    tensors = {
        hf_tensor_name(name): t.detach().to("cpu").contiguous()
        for name, t in state_dict.items()
        if not (config.tie_word_embeddings and name == "lm_head.weight")
    }
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    eos = config.eos_token_ids or (tokenizer.eos_token_ids if tokenizer else [])
    generation = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": config.pad_token_id,
    }
    write_json(directory / "generation_config.json", generation)
    if tokenizer is not None:
        tokenizer.save(directory)


# ---- reading ----


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from e


def load_config(directory: str | Path) -> ModelConfig:
    path = resolve_directory(directory) / "config.json"
    data = _read_json(path)
    try:
        return ModelConfig.from_hf_dict(data, source=str(path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e


def _weight_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map", {})
        return [directory / name for name in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def read_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint, by HF name."""
    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(resolve_directory(directory)):
        if not path.exists():
            raise CheckpointError(f"{path} not found (listed in model.safetensors.index.json)")
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensors[name] = f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e
    return tensors


def load_state_dict_into(model: Transformer, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy HF-named `tensors` into `model`, checking names and shapes; nothing is dropped."""
    expected = {hf_tensor_name(n): p for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
        tensors = {n: t for n, t in tensors.items() if n != "lm_head.weight"}  # a tied duplicate
    for name, param in expected.items():
        if name not in tensors:
            raise CheckpointError(
                f"{source}: tensor {name!r} is missing (shape {tuple(param.shape)})"
            )
        if tensors[name].shape != param.shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)} but config.json "
                f"implies {tuple(param.shape)}"
            )
    unexpected = [
        n for n in tensors if n not in expected and not n.endswith(_IGNORED_TENSOR_SUFFIXES)
    ]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor(s) {', '.join(sorted(unexpected)[:5])}")
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])


def load_checkpoint(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Transformer:
    """A `Transformer` with the weights of a Hugging Face Llama directory (ours or anyone's)."""
    directory = resolve_directory(directory)
    config = load_config(directory)
    generation_path = directory / "generation_config.json"
    if config.eos_token_id is None and generation_path.exists():
        config.eos_token_id = _read_json(generation_path).get("eos_token_id")
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to_empty(device=device)
    if config.tie_word_embeddings:  # to_empty() unties: tie again
        model.lm_head.weight = model.embed_tokens.weight
    load_state_dict_into(model, read_tensors(directory), source=str(directory))
    return model.to(dtype).eval()


def load_tokenizer(directory: str | Path) -> Tokenizer:
    return Tokenizer.load(resolve_directory(directory))
