"""Byte-level BPE tokenizer: training with Hugging Face `tokenizers`, loading any HF tokenizer
directory, and rendering chat templates.

Text is first split with the Llama-3 / GPT-4 regex (llama.cpp implements the same split as its
"llama-bpe" pre-tokeniser, so a GGUF export tokenises identically), then mapped to bytes, then
merged. Every byte has a token, so any string round-trips losslessly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tokenizers
from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from charter.files import read_json, write_json

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END] + [f"<|reserved_{i}|>" for i in range(5)]

# The Llama-3 pre-tokenisation pattern: contractions, words with one leading non-letter,
# numbers in groups of ≤ 3 digits, punctuation runs, newlines, and whitespace.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def byte_level_bpe(vocab_size: int) -> tuple[tokenizers.Tokenizer, trainers.BpeTrainer]:
    """An untrained byte-level BPE tokenizer with the Llama-3 split, and its trainer."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    return tok, trainer


@dataclass
class Tokenizer:
    """A `tokenizers.Tokenizer` plus what `tokenizer_config.json` says about it."""

    backend: tokenizers.Tokenizer
    config: dict[str, Any] = field(default_factory=dict)

    # ---- construction ----

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, chat_template: str | None = None
    ) -> Tokenizer:
        """A BPE trained on `texts`; `chat_template` (a Jinja template, e.g. Charter's
        `charter.chat.CHAT_TEMPLATE`) goes into its config for chat models."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size {vocab_size} is below the {256 + len(SPECIAL_TOKENS)} byte and special"
                " tokens every byte-level tokenizer needs"
            )
        backend, trainer = byte_level_bpe(vocab_size)
        backend.train_from_iterator(texts, trainer=trainer)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": None,
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "additional_special_tokens": SPECIAL_TOKENS[1:],
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        if chat_template is not None:
            config["chat_template"] = chat_template
        return cls(backend, config)

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: the directory has no tokenizer.json")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path}: not a valid tokenizer file ({e})") from e
        config_path = directory / "tokenizer_config.json"
        config = read_json(config_path) if config_path.exists() else {}
        template_path = directory / "chat_template.jinja"  # newer HF layout keeps it beside
        if "chat_template" not in config and template_path.exists():
            config["chat_template"] = template_path.read_text()
        return cls(backend, config)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        write_json(directory / "tokenizer_config.json", self.config)

    # ---- encoding ----

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """Token ids of `text`. With `special_tokens=False`, a literal "<|im_end|>" in the text is
        encoded as ordinary characters (use it for untrusted content)."""
        self.backend.encode_special_tokens = not special_tokens
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        finally:
            self.backend.encode_special_tokens = False

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def _special(self, key: str) -> str | None:
        value = self.config.get(key)
        return value.get("content") if isinstance(value, dict) else value

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end a generation: the configured EOS and, for chat models, `<|im_end|>`."""
        names = [self._special("eos_token"), IM_END if self.chat_template else None]
        ids = [self.token_id(n) for n in names if n]
        return sorted({i for i in ids if i is not None})

    @property
    def pad_token_id(self) -> int:
        for name in (self._special("pad_token"), self._special("eos_token"), ENDOFTEXT):
            if name and self.token_id(name) is not None:
                return self.token_id(name)
        return 0

    # ---- chat ----

    @property
    def chat_template(self) -> str | None:
        return self.config.get("chat_template")

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **variables: Any
    ) -> str:
        """Render `messages` with the directory's Jinja chat template, as transformers does."""
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template (tokenizer_config.json)")
        template = _compiled_template(self.chat_template)
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self._special("bos_token") or "",
            eos_token=self._special("eos_token") or "",
            **variables,
        )


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template: {message}")


@functools.lru_cache(maxsize=8)
def _compiled_template(source: str) -> Template:
    """Compiling a template takes ~20 ms; a model's template is rendered for every prompt."""
    return _jinja_environment().from_string(source)


def _jinja_environment() -> ImmutableSandboxedEnvironment:
    # The same environment settings transformers uses, so templates written for it render alike.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def bytes_per_token(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)
