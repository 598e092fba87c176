"""Import a local Hugging Face Llama or Qwen2 directory (any `LlamaForCausalLM` or
`Qwen2ForCausalLM`) as a Charter checkpoint.

A Charter checkpoint already is such a Hugging Face directory, so this is mostly a careful copy:
every tensor is checked against `config.json` as it is loaded, features Charter's model does not
implement (rope scaling, Llama biases, sliding windows, other activations) are refused by name,
and the result is written in Charter's layout (fp32, one safetensors file, the chat template inside
`tokenizer_config.json`) and verified by loading it back. Sampling defaults from the source's
`generation_config.json` and its licence and README files are carried over.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from charter.checkpoint import CheckpointError, load_checkpoint, load_tokenizer
from charter.config import FAMILIES
from charter.files import read_json, resolve_directory, write_json
from charter.interop.verify import write_verified
from charter.tokenizer import Tokenizer

CAUSAL_LMS = [f"{family}ForCausalLM" for family in FAMILIES.values()]
CARRIED_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE", "README.md")


def import_hf(source: str | Path, out: str | Path) -> Path:
    """Write the Llama or Qwen2 directory `source` as a Charter checkpoint directory `out`."""
    source = resolve_directory(source)
    config_path = source / "config.json"
    try:
        architectures = read_json(config_path).get("architectures") or CAUSAL_LMS[:1]
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from e
    if len(architectures) != 1 or architectures[0] not in CAUSAL_LMS:
        raise CheckpointError(
            f"{config_path}: architectures {architectures} is not a {' or '.join(CAUSAL_LMS)}; "
            "only causal language models can be imported"
        )
    model = load_checkpoint(source)
    tokenizer = _tokenizer(source)

    def carry_over(directory: Path) -> None:
        generation = source / "generation_config.json"
        if generation.exists():
            # The source's file wins: it may list more end-of-turn ids than config.json does.
            merged = {**read_json(directory / "generation_config.json"), **read_json(generation)}
            write_json(directory / "generation_config.json", merged)
        for name in CARRIED_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, directory / name)

    return write_verified(model, tokenizer, Path(out), add_extras=carry_over)


def _tokenizer(source: Path) -> Tokenizer | None:
    if (source / "tokenizer.json").exists():
        return load_tokenizer(source)
    if (source / "tokenizer.model").exists():
        raise CheckpointError(
            f"{source}: only a SentencePiece tokenizer.model, no tokenizer.json; write one with "
            "transformers first (AutoTokenizer.from_pretrained(dir).save_pretrained(dir))"
        )
    return None
