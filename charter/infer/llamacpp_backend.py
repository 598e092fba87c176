"""The engine's backend on llama.cpp: a GGUF file (Charter's export of a checkpoint) run by
llama.cpp's forward pass, under the same `Engine` as the PyTorch backend, so sampling, stop
sequences, logits processors and continuous batching are the engine's own code for both.

- `prefill` puts a prompt into its row's llama.cpp sequence (one `llama_decode`);
- `decode` puts the last token of every active row into one llama.cpp batch, each tagged with
  its row's sequence id and position, and reads the logits of all rows at once.

With a split KV cache llama.cpp runs a batch as one forward pass per run of consecutive,
increasing sequence ids in batch order, each pass reading every weight again. So the batch goes
in sequence-id order, and a new row takes the lowest free sequence id, which keeps the active
ids consecutive: unordered, a busy server's decode steps took up to twice as long.

The context has `max_batch_size` sequences and a split (not unified) KV cache, so each
sequence owns at least `max_len` cells, as each row of the PyTorch `KVCache` does. llama.cpp is
reached through `llama-cpp-python`'s bindings of its C API (its high-level `Llama` class decodes
one sequence at a time).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from charter.infer.engine import Backend


class SequenceRows:
    """The engine's rows mapped onto llama.cpp sequence ids: what `KVCache` is to the PyTorch
    backend.

    llama.cpp keeps a sequence's keys and values where they are, so when the engine moves a row
    only the id moves; it is swapped, so the vacated row holds the freed sequence, which
    `prefill` clears before reusing it.
    """

    def __init__(self, batch_size: int, max_len: int) -> None:
        # numpy, not torch: the backend reads these every step, and numpy's per-call overhead on
        # a few integers is a fraction of torch's.
        self.seq_ids = np.arange(batch_size, dtype=np.int32)
        self.lengths = np.zeros(batch_size, dtype=np.int64)  # tokens cached per row
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return len(self.seq_ids)

    def move_row(self, src: int, dst: int) -> None:
        self.seq_ids[[src, dst]] = self.seq_ids[[dst, src]]
        self.lengths[dst] = self.lengths[src]

    def take_lowest_free_id(self, index: int) -> int:
        """Give row `index`, the first free row, the lowest free sequence id (all rows from
        `index` on are free) and return it."""
        lowest = index + int(np.argmin(self.seq_ids[index:]))
        self.move_row(lowest, index)
        return int(self.seq_ids[index])


class LlamaCppLoadError(ValueError):
    """A GGUF file llama.cpp would not load, or a context it could not create."""


GGML_LOG_LEVEL_ERROR = 4  # ggml.h's `enum ggml_log_level` (llama-cpp-python's own map is older)


@contextlib.contextmanager
def _collected_errors(llama_cpp) -> Iterator[list[str]]:
    """The error messages llama.cpp logs inside the block (and passes on as usual).
    llama-cpp-python's log callback reads llama.cpp's errors as debug messages and drops them,
    which left a refused file's reason unsaid."""
    from llama_cpp._logger import llama_log_callback as passed_on

    errors: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == GGML_LOG_LEVEL_ERROR:
            errors.append(text.decode(errors="replace").strip())
        passed_on(level, text, user_data)

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        llama_cpp.llama_log_set(passed_on, ctypes.c_void_p(0))


def _reasons(errors: list[str]) -> str:
    return "; ".join(errors) or "no reason logged"


def _free(llama_cpp, model, context, batch) -> None:
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(context)
    llama_cpp.llama_model_free(model)


class LlamaCppBackend(Backend):
    def __init__(
        self,
        gguf_path: str | Path,
        max_batch_size: int = 8,
        max_len: int | None = None,
        n_threads: int | None = None,
        kv_type: str = "f16",
        verbose: bool = False,
    ) -> None:
        """The GGUF file `gguf_path` on llama.cpp, with `max_batch_size` sequences of `max_len`
        tokens (default and at most the file's context length). `n_threads` defaults to every
        core this process may use. `kv_type` is the KV cache's element type: "f16" (llama.cpp's
        default) or "f32" (exact keys and values, for f32 weights). `verbose` shows llama.cpp's
        log. Raises `LlamaCppLoadError` when llama.cpp refuses the file."""
        import llama_cpp  # the optional dependency: imported only when this backend is used

        logging.getLogger("llama-cpp-python").setLevel(logging.INFO if verbose else logging.ERROR)
        kv_types = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}
        if kv_type not in kv_types:
            raise ValueError(f"kv_type {kv_type!r} is not one of {', '.join(kv_types)}")
        if max_batch_size > llama_cpp.llama_max_parallel_sequences():
            raise ValueError(
                f"max_batch_size {max_batch_size} exceeds llama.cpp's "
                f"{llama_cpp.llama_max_parallel_sequences()} parallel sequences"
            )
        llama_cpp.llama_backend_init()
        with _collected_errors(llama_cpp) as errors:
            model = llama_cpp.llama_model_load_from_file(
                str(gguf_path).encode(), llama_cpp.llama_model_default_params()
            )
        if not model:
            raise LlamaCppLoadError(
                f"{gguf_path}: llama.cpp could not load this file ({_reasons(errors)})"
            )
        trained = llama_cpp.llama_model_n_ctx_train(model)
        self.max_len = min(max_len or trained, trained)
        self.device = torch.device("cpu")
        params = llama_cpp.llama_context_default_params()
        # llama.cpp gives each sequence a multiple of 256 cells (and warns when rounding).
        params.n_ctx = max_batch_size * -(-self.max_len // 256) * 256
        params.n_seq_max = max_batch_size
        params.kv_unified = False  # each sequence gets its own n_ctx / n_seq_max cells
        params.n_batch = max(self.max_len, max_batch_size)  # a whole prompt in one llama_decode
        params.n_ubatch = min(params.n_batch, 512)
        params.n_threads = params.n_threads_batch = n_threads or len(os.sched_getaffinity(0))
        params.type_k = params.type_v = kv_types[kv_type]
        params.no_perf = True
        # Off, as in llama-cpp-python's `Llama`, so the two compare like for like (llama.cpp's
        # "auto" turns it on; on this CPU that decoded small models more slowly).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        with _collected_errors(llama_cpp) as errors:
            context = llama_cpp.llama_init_from_model(model, params)
        if not context:
            llama_cpp.llama_model_free(model)
            raise LlamaCppLoadError(
                f"{gguf_path}: llama.cpp could not create a context ({_reasons(errors)})"
            )
        batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        # numpy views of the batch's arrays, so filling a batch is a few slice assignments.
        view = lambda pointer: np.ctypeslib.as_array(pointer, shape=(params.n_batch,))  # noqa: E731
        self._tokens, self._positions = view(batch.token), view(batch.pos)
        self._wants_logits = view(batch.logits)
        view(batch.n_seq_id)[:] = 1  # every token belongs to one sequence
        self._seq_id_slots = [batch.seq_id[i] for i in range(params.n_batch)]
        self._close = weakref.finalize(self, _free, llama_cpp, model, context, batch)
        self._llama, self._context, self._batch = llama_cpp, context, batch
        self._memory = llama_cpp.llama_get_memory(context)
        vocab = llama_cpp.llama_model_get_vocab(model)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(vocab)
        file_eos = llama_cpp.llama_vocab_eos(vocab)
        self.eos_token_ids = [file_eos] if file_eos >= 0 else []
        self.rows = SequenceRows(max_batch_size, self.max_len)
        # Each row of llama.cpp's logits buffer as a tensor, by (buffer address, rows): made
        # once, because at small model sizes making views (or any torch call) right after a
        # llama_decode costs more than the rest of the engine's step.
        self._logits_rows: dict[tuple[int, int], list[torch.Tensor]] = {}

    @property
    def batch_size(self) -> int:
        return self.rows.batch_size

    def prefill(self, prompt: list[int], row: int) -> torch.Tensor:
        """Logits (V,) of the token after `prompt`, prefilled into row `row`'s sequence (`row`
        is the first free row: the engine's rows are contiguous)."""
        seq_id = self.rows.take_lowest_free_id(row)
        self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)  # a previous occupant's
        logits = self._forward(prompt, [seq_id] * len(prompt), range(len(prompt)), last_only=True)
        self.rows.lengths[row] = len(prompt)
        return logits[0]

    def decode(self, last_tokens: list[int]) -> list[torch.Tensor]:
        n = len(last_tokens)
        rows_in_order = np.argsort(self.rows.seq_ids[:n])  # batch position → row
        position_of_row = np.argsort(rows_in_order)  # before the decode: see `_logits_rows`
        logits = self._forward(
            np.asarray(last_tokens)[rows_in_order],
            self.rows.seq_ids[rows_in_order],
            self.rows.lengths[rows_in_order],
        )
        self.rows.lengths[:n] += 1
        return [logits[p] for p in position_of_row]

    def move_row(self, src: int, dst: int) -> None:
        self.rows.move_row(src, dst)

    def token_logprobs(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int], batch_size: int = 8
    ) -> list[list[float]]:
        raise NotImplementedError(
            "the llamacpp backend does not score given text; load the model on torch"
        )

    def close(self) -> None:
        """Free llama.cpp's model, context and batch now (otherwise when garbage collected)."""
        self._close()

    def _forward(
        self,
        tokens: Sequence[int],
        seq_ids: Sequence[int],
        positions: Sequence[int],
        last_only: bool = False,
    ) -> list[torch.Tensor]:
        """One `llama_decode` of `tokens`, token i in sequence `seq_ids[i]` at `positions[i]`;
        the logits (V,) of every token, or of the last one only.

        The tensors are views of llama.cpp's output buffer, valid until the next decode: the
        engine samples from them at once."""
        n = len(tokens)
        self._tokens[:n] = tokens
        self._positions[:n] = positions
        self._wants_logits[:n] = not last_only
        self._wants_logits[n - 1] = True
        for slot, seq_id in zip(self._seq_id_slots[:n], seq_ids, strict=True):
            slot[0] = seq_id
        self._batch.n_tokens = n
        status = self._llama.llama_decode(self._context, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        outputs = 1 if last_only else n
        buffer = self._llama.llama_get_logits(self._context)
        key = (ctypes.addressof(buffer.contents), outputs)
        if key not in self._logits_rows:
            array = np.ctypeslib.as_array(buffer, shape=(outputs, self.vocab_size))
            self._logits_rows[key] = list(torch.from_numpy(array))
        return self._logits_rows[key]
