"""Checkpoints are Hugging Face Llama directories.

    config.json              LlamaConfig fields; `architectures` LlamaForCausalLM (a `Transformer`)
                             or LlamaForSequenceClassification (a `heads.ScoreModel`)
    model.safetensors        HF tensor names (model.layers.0.self_attn.q_proj.weight, …,
                             lm_head.weight or score.weight)
    tokenizer.json           + tokenizer_config.json (with the chat template)
    generation_config.json   EOS ids and sampling defaults (causal LMs only)
    value_head.safetensors   a `heads.PolicyWithValue`'s value head, beside its policy's files
                             (transformers ignores it; the directory loads as the policy alone)

Writes are atomic: everything goes to a temporary sibling directory, each file is fsynced, and the
directory is renamed into place, so a crash leaves either the old checkpoint or the new one.
Reads check every tensor against the config and name the file and tensor that is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from charter.config import CAUSAL_LM, SEQUENCE_CLASSIFICATION, ModelConfig
from charter.files import (
    read_json,
    replace_directory,
    resolve_directory,
    temporary_sibling,
    write_json,
)
from charter.heads import PolicyWithValue, ScoreModel, seeded_normal_
from charter.model import Transformer
from charter.tokenizer import Tokenizer

VALUE_HEAD_FILE = "value_head.safetensors"

# Tensors some HF checkpoints carry that are derived, not learned.
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete, corrupt, or does not match its config."""


def hf_tensor_name(name: str) -> str:
    """Our parameter names are HF's without the `model.` prefix of the decoder stack."""
    return name if name.startswith("lm_head.") else f"model.{name}"


# ---- writing ----


def save_checkpoint(
    model: Transformer | ScoreModel, directory: str | Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write `model` (and its tokenizer) as a Hugging Face directory, atomically."""
    return _atomically(
        directory, lambda tmp: write_checkpoint(tmp, model.config, model.state_dict(), tokenizer)
    )


def _atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """`write` the files into a temporary sibling of `directory`, then rename it into place."""
    directory = Path(directory)
    tmp = temporary_sibling(directory)
    write(tmp)
    replace_directory(tmp, directory)
    return directory


def write_checkpoint(
    directory: Path,
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write the files of a checkpoint into an existing (temporary) directory: `state_dict` is
    a `Transformer`'s or a `ScoreModel`'s, as `config.architecture` says."""
    hf_config = config.to_hf_dict()
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # the weights' own precision, which transformers' dtype="auto" reads
        hf_config["torch_dtype"] = str(dtypes.pop()).removeprefix("torch.")
    write_json(directory / "config.json", hf_config)
    _write_safetensors(_hf_tensors(config, state_dict), directory / "model.safetensors")
    if config.architecture == CAUSAL_LM:
        eos = config.eos_token_ids or (tokenizer.eos_token_ids if tokenizer else [])
        generation = {
            "bos_token_id": config.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": config.pad_token_id,
        }
        write_json(directory / "generation_config.json", generation)
    if tokenizer is not None:
        tokenizer.save(directory)


def _hf_tensors(
    config: ModelConfig, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`state_dict` by HF tensor name; a name the architecture lacks (a wrapper's state dict,
    a head that would be lost) is an error, not a tensor written where no loader looks."""
    unknown = sorted(set(state_dict) - set(_new_model(config, "meta").state_dict()))
    if unknown:
        raise ValueError(
            f"tensor(s) {', '.join(unknown[:5])} are not part of a {config.architecture}"
        )
    if config.architecture == SEQUENCE_CLASSIFICATION:  # a ScoreModel's names are HF's
        return dict(state_dict)
    return {
        hf_tensor_name(n): t
        for n, t in state_dict.items()
        if not (config.tie_word_embeddings and n == "lm_head.weight")
    }


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    save_file(tensors, path, metadata={"format": "pt"})


def save_policy_with_value(
    model: PolicyWithValue, directory: str | Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write `model`'s policy as a Hugging Face directory and its value head beside it,
    atomically."""
    state_dict = model.state_dict()
    return _atomically(
        directory, lambda tmp: write_policy_with_value(tmp, model.config, state_dict, tokenizer)
    )


def write_policy_with_value(
    directory: Path,
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write a `PolicyWithValue`'s state dict into an existing (temporary) directory: the
    `policy.…` tensors as a checkpoint, the `value_head.…` ones in value_head.safetensors."""
    policy = {
        n.removeprefix("policy."): t for n, t in state_dict.items() if n.startswith("policy.")
    }
    write_checkpoint(directory, config, policy, tokenizer)
    value_head = {n: t for n, t in state_dict.items() if not n.startswith("policy.")}
    _write_safetensors(value_head, directory / VALUE_HEAD_FILE)


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
        tensors.update(_read_safetensors(path))
    return tensors


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e


def load_state_dict_into(model: Transformer, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy HF-named `tensors` into `model`, checking names and shapes; nothing is dropped."""
    expected = {hf_tensor_name(n): p for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
        tensors = {n: t for n, t in tensors.items() if n != "lm_head.weight"}  # a tied duplicate
    _copy_checked(expected, tensors, source)


def _copy_checked(
    expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str
) -> None:
    """Copy `tensors` into the `expected` ones of the same names, which must all be there with
    the same shapes and no others."""
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


def _new_model(config: ModelConfig, device: str | torch.device) -> Transformer | ScoreModel:
    """A model of `config`'s architecture with uninitialised weights on `device`, to copy into."""
    with torch.device("meta"):
        is_score = config.architecture == SEQUENCE_CLASSIFICATION
        model = ScoreModel(config) if is_score else Transformer(config)
    model = model.to_empty(device=device)
    if not is_score and config.tie_word_embeddings:  # to_empty() unties: tie again
        model.lm_head.weight = model.embed_tokens.weight
    return model


def load_checkpoint(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Transformer:
    """A `Transformer` with the weights of a Hugging Face Llama directory (ours or anyone's)."""
    directory = resolve_directory(directory)
    config = load_config(directory)
    if config.architecture != CAUSAL_LM:
        raise CheckpointError(
            f"{directory} is a {config.architecture} checkpoint (a score head, no LM head): "
            "load it with load_score_model"
        )
    generation_path = directory / "generation_config.json"
    if config.eos_token_id is None and generation_path.exists():
        config.eos_token_id = _read_json(generation_path).get("eos_token_id")
    model = _new_model(config, device)
    load_state_dict_into(model, read_tensors(directory), source=str(directory))
    return model.to(dtype).eval()


def load_score_model(
    directory: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    num_labels: int | None = None,
    seed: int = 0,
) -> ScoreModel:
    """A `ScoreModel` from a LlamaForSequenceClassification directory, or from a LlamaForCausalLM
    one (a reward model starting from a policy): that decoder without its LM head, and a new
    score head of `num_labels` (default 1) outputs drawn from N(0, initializer_range²) by a
    generator seeded `seed`, as transformers' initialisation but the same on every load."""
    directory = resolve_directory(directory)
    config = load_config(directory)
    tensors = read_tensors(directory)
    new_head = config.architecture == CAUSAL_LM
    if new_head:
        config = dataclasses.replace(
            config, architecture=SEQUENCE_CLASSIFICATION, num_labels=num_labels or 1
        )
        tensors = {n: t for n, t in tensors.items() if n != "lm_head.weight"}
    elif num_labels not in (None, config.num_labels):
        raise CheckpointError(
            f"{directory}: its score head has {config.num_labels} labels, not {num_labels}"
        )
    model = _new_model(config, device)
    expected = model.state_dict()
    if new_head:
        seeded_normal_(expected.pop("score.weight"), config.initializer_range, seed)
    _copy_checked(expected, tensors, source=str(directory))
    return model.to(dtype).eval()


def load_policy_with_value(
    directory: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    value_head_seed: int | None = None,
) -> PolicyWithValue:
    """A `PolicyWithValue`: the policy of a LlamaForCausalLM directory and the value head of its
    value_head.safetensors. A directory without one (a policy before PPO) needs
    `value_head_seed` for a new head, so that a resumed run never silently gets a new critic."""
    directory = resolve_directory(directory)
    policy = load_checkpoint(directory, dtype, device)
    path = directory / VALUE_HEAD_FILE
    if not path.exists():
        if value_head_seed is None:
            raise CheckpointError(
                f"{path} not found: pass value_head_seed to start a new value head"
            )
        return PolicyWithValue(policy, seed=value_head_seed)
    model = PolicyWithValue(policy)
    expected = {n: t for n, t in model.state_dict().items() if n.startswith("value_head.")}
    _copy_checked(expected, _read_safetensors(path), source=str(path))
    return model.eval()


def load_tokenizer(directory: str | Path) -> Tokenizer:
    return Tokenizer.load(resolve_directory(directory))
