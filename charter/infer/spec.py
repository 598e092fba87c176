"""Model specs: the one string every command that takes a model accepts.

    runs/sft/final                          a checkpoint directory, on the default backend (auto)
    torch:runs/sft/final                    … on a named backend: torch | llamacpp | auto
    runs/smollm2,format=charter             … prompted in Charter's format, not its own template
    anthropic:MODEL                         an Anthropic Messages endpoint (ANTHROPIC_BASE_URL,
                                            else Anthropic's), key from ANTHROPIC_API_KEY
    anthropic:MODEL@http://127.0.0.1:8000   … at this base URL (say, another `charter serve`)
    openai:MODEL@http://127.0.0.1:8080/v1   an OpenAI-compatible chat-completions endpoint
                                            (vLLM, llama.cpp's server, Ollama), key from
                                            OPENAI_API_KEY

Options follow the target, comma-separated: `format=charter|template` (local), and for remote
endpoints `key_env=VARIABLE`, `key_file=PATH`, `concurrency=N` (requests in flight). Engine
options (dtype, compile, int8, batch size, context) come from the command's own flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.infer.generator import Generator

LOCAL_BACKENDS = ("auto", "torch", "llamacpp")
REMOTE_KINDS = ("anthropic", "openai")
_OPTIONS = {
    "local": {"format"},
    "remote": {"key_env", "key_file", "concurrency"},
}


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # a local backend, or a remote kind
    target: str  # a directory, or a remote model id
    base_url: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.kind in LOCAL_BACKENDS

    @property
    def default_name(self) -> str:
        """A model's id when none is given: the directory's name, or the remote model id."""
        return Path(self.target).resolve().name if self.is_local else self.target


def parse_model_spec(spec: str, default_backend: str = "auto") -> ModelSpec:
    """Read a spec (see the module docstring); errors quote the spec and say what is wrong."""
    if not spec:
        raise ValueError("model spec is empty")
    body, *option_items = spec.split(",")
    kind, separator, target = body.partition(":")
    if not separator or kind not in LOCAL_BACKENDS + REMOTE_KINDS:
        kind, target = default_backend, body  # a plain directory
    if not target:
        raise ValueError(f"model spec {spec!r}: nothing after {kind}:")
    options = {}
    for item in option_items:
        key, has_value, value = item.partition("=")
        allowed = _OPTIONS["local" if kind in LOCAL_BACKENDS else "remote"]
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"model spec {spec!r}: unknown option {key!r} (known: {known})")
        if not has_value or not value:
            raise ValueError(f"model spec {spec!r}: option {key!r} needs a value ({key}=…)")
        options[key] = value
    base_url = None
    if kind in REMOTE_KINDS:
        target, _, base_url = target.partition("@")
        if not target:
            raise ValueError(f"model spec {spec!r}: no model id before '@'")
        base_url = base_url or None
        if kind == "openai" and base_url is None:
            raise ValueError(f"model spec {spec!r}: an openai endpoint needs @BASE_URL")
    return ModelSpec(kind, target, base_url, options)


def load_generator(
    spec: str | ModelSpec,
    *,
    name: str | None = None,
    backend: str = "auto",
    max_waiting: int = 64,
    **engine_options: Any,
) -> Generator:
    """A Generator for `spec`, named `name` (default: `ModelSpec.default_name`). A local spec
    runs on its own backend, else on `backend`, with an engine from
    `backends.load_engine(directory, backend, **engine_options)`."""
    if isinstance(spec, str):
        spec = parse_model_spec(spec, default_backend=backend)
    name = name or spec.default_name
    if spec.is_local:
        from charter.chat.format import chat_format
        from charter.infer.backends import load_engine
        from charter.infer.local import LocalGenerator

        engine = load_engine(spec.target, spec.kind, **engine_options)
        format = chat_format(engine.tokenizer, spec.options.get("format"))
        return LocalGenerator(engine, name, format=format, max_waiting=max_waiting)
    from charter.infer.anthropic_remote import AnthropicGenerator
    from charter.infer.openai_remote import OpenAIGenerator

    kwargs: dict[str, Any] = {"base_url": spec.base_url}
    if "concurrency" in spec.options:
        concurrency = spec.options["concurrency"]
        if not concurrency.isdigit() or int(concurrency) < 1:
            raise ValueError(f"concurrency={concurrency}: expected a whole number ≥ 1")
        kwargs["max_concurrency"] = int(concurrency)
    for key in ("key_env", "key_file"):
        if key in spec.options:
            kwargs[key] = spec.options[key]
    kind = AnthropicGenerator if spec.kind == "anthropic" else OpenAIGenerator
    generator = kind(spec.target, **kwargs)
    generator.name = name
    return generator


def generator_from_arguments(spec: str, args: Any, max_len: int) -> Generator:
    """The Generator for a model spec on a command's `backends.add_engine_arguments` options, its
    engine batching up to `args.batch_size` rows of `max_len` positions."""
    from charter.infer.backends import engine_options

    return load_generator(
        spec,
        max_batch_size=args.batch_size,
        max_len=max_len,
        backend=args.backend,
        **engine_options(args),
    )
