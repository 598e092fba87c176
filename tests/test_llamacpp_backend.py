"""The llama.cpp engine: the same outputs as the PyTorch engine (greedy and seeded sampling),
batching of prompts of different lengths, stop sequences, EOS, cancellation, the context window;
the `load_engine` factory and its GGUF cache; and `--backend` in generate and serve."""

from __future__ import annotations

import argparse

import httpx
import pytest
import torch

from charter.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from charter.cli import main
from charter.infer import backends
from charter.infer.backends import (
    add_engine_arguments,
    engine_options,
    load_engine,
    resolve_backend,
)
from charter.infer.engine import (
    CONTEXT_WINDOW,
    END_TURN,
    MAX_TOKENS,
    STOP_SEQUENCE,
    Engine,
    GenerationRequest,
)
from charter.infer.int8_linear import Int8Linear
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.interop.gguf_export import export_gguf
from charter.model import Transformer
from charter.serve.registry import Registry, load_served_model
from tests.helpers import load_bench, micro
from tests.serve_helpers import free_port, running_server

pytest.importorskip("llama_cpp")
from charter.infer.llamacpp_backend import LlamaCppBackend  # noqa: E402

GREEDY = SamplingParams(max_new_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = Transformer(micro(max_position_embeddings=64))
    return save_checkpoint(model, tmp_path_factory.mktemp("m") / "micro", tokenizer)


@pytest.fixture(scope="module")
def gguf_file(checkpoint, tmp_path_factory):
    return export_gguf(checkpoint, tmp_path_factory.mktemp("gguf") / "m.gguf", progress=False)


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The PyTorch engine on the same checkpoint, without EOS (random models stop anywhere)."""
    return Engine(
        TorchBackend(load_checkpoint(checkpoint)), load_tokenizer(checkpoint), eos_token_ids=[]
    )


def llama_engine(gguf_file, checkpoint, eos_token_ids=(), kv_type="f32", **options) -> Engine:
    backend = LlamaCppBackend(gguf_file, kv_type=kv_type, **options)
    return Engine(backend, load_tokenizer(checkpoint), eos_token_ids=eos_token_ids)


@pytest.fixture(scope="module")
def prompts(checkpoint, corpus):
    tokenizer = load_tokenizer(checkpoint)
    return [tokenizer.encode(text)[:n] for text, n in zip(corpus[:5], [1, 7, 20, 3, 33])]


def test_greedy_output_equals_the_pytorch_engine(gguf_file, checkpoint, reference, prompts):
    # Five prompts of different lengths and output lengths through three rows: batching, rows
    # leaving from the middle of the batch, and continuous admission into their places.
    lengths = [5, 24, 9, 24, 3]
    params = [SamplingParams(max_new_tokens=n, temperature=0) for n in lengths]
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=3)
    expected = reference.generate(prompts, params)
    assert engine.generate(prompts, params) == expected
    assert [len(c.token_ids) for c in expected] == lengths


def test_decode_batches_hold_consecutive_sequence_ids_in_order(gguf_file, checkpoint, prompts):
    # llama.cpp runs a batch over a split KV cache as one pass per run of consecutive,
    # increasing sequence ids; rows leaving the middle of the batch must not break it into more.
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=3)
    forward, decode_batches = engine.backend._forward, []

    def spy(tokens, seq_ids, positions, last_only=False):
        if not last_only:
            decode_batches.append([int(s) for s in seq_ids])
        return forward(tokens, seq_ids, positions, last_only)

    engine.backend._forward = spy
    lengths = [5, 24, 9, 24, 3]
    engine.generate(prompts, [SamplingParams(max_new_tokens=n, temperature=0) for n in lengths])
    for ids in decode_batches:
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert {len(ids) for ids in decode_batches} == {1, 2, 3}


def test_batched_generation_equals_one_at_a_time(gguf_file, checkpoint, prompts):
    batched = llama_engine(gguf_file, checkpoint, max_batch_size=5, kv_type="f16")
    alone = llama_engine(gguf_file, checkpoint, max_batch_size=1, kv_type="f16")
    assert batched.generate(prompts, GREEDY) == alone.generate(prompts, GREEDY)


def test_stop_sequence_ends_the_text_before_it(gguf_file, checkpoint, reference, prompts):
    full = reference.generate([prompts[2]], GREEDY)[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    params = SamplingParams(max_new_tokens=24, temperature=0, stop=[stop])
    completion = llama_engine(gguf_file, checkpoint).generate([prompts[2]], params)[0]
    assert (completion.stop_reason, completion.stop_sequence) == (STOP_SEQUENCE, stop)
    assert completion.text == full[: full.index(stop)]


def test_eos_ends_the_turn_without_being_reported(gguf_file, checkpoint, reference, prompts):
    greedy = reference.generate([prompts[1]], GREEDY)[0].token_ids
    eos = greedy[5]
    engine = llama_engine(gguf_file, checkpoint, eos_token_ids=[eos])
    completion = engine.generate([prompts[1]], GREEDY)[0]
    assert completion.stop_reason == END_TURN
    assert completion.token_ids == greedy[: greedy.index(eos)]


def test_default_eos_is_the_files_and_the_tokenizers(gguf_file, checkpoint):
    engine = Engine(LlamaCppBackend(gguf_file), load_tokenizer(checkpoint))
    assert engine.eos_token_ids == {load_tokenizer(checkpoint).token_id("<|im_end|>")}


def test_cancelled_sequence_leaves_and_its_cache_is_not_reused(
    gguf_file, checkpoint, reference, prompts
):
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=1)
    cancelled = GenerationRequest(prompts[4], GREEDY)
    engine.add(cancelled)
    engine.step()
    cancelled.cancelled = True
    assert engine.step() == [] and engine.active_requests == [] and engine.free_rows == 1
    assert cancelled.completion is None and len(cancelled.generated) == 2
    # The next sequence gets the same llama.cpp sequence id; nothing of the old one may remain.
    assert engine.generate([prompts[0]], GREEDY) == reference.generate([prompts[0]], GREEDY)


def test_seeded_sampling_is_reproducible_and_equals_pytorch(
    gguf_file, checkpoint, reference, prompts
):
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=2)
    sampled = [
        SamplingParams(max_new_tokens=16, temperature=0.9, top_k=50, top_p=0.95, seed=s)
        for s in (1, 1, 2)
    ]
    first, again, other = engine.generate([prompts[2]] * 3, sampled)
    assert first == again != other
    assert [first, other] == reference.generate([prompts[2]] * 2, [sampled[0], sampled[2]])


def test_logits_processors_steer_every_token(gguf_file, checkpoint, prompts):
    def always_seven(generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, float("-inf"))
        forced[7] = 0.0
        return forced

    engine = llama_engine(gguf_file, checkpoint)
    request = GenerationRequest(prompts[1], GREEDY, logits_processors=[always_seven])
    for _ in engine.run([request]):
        pass
    assert request.completion.token_ids == [7] * 24


def test_context_window_is_enforced_per_sequence(gguf_file, checkpoint, reference, prompts):
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=2)
    assert engine.max_len == 64  # the file's context length
    long_prompt = (prompts[4] * 2)[:60]
    params = SamplingParams(max_new_tokens=24, temperature=0)
    completions = engine.generate([long_prompt, prompts[0]], params)
    assert completions == reference.generate([long_prompt, prompts[0]], params)
    assert [c.stop_reason for c in completions] == [CONTEXT_WINDOW, MAX_TOKENS]
    assert len(completions[0].token_ids) == 64 - 60


def test_bad_prompts_are_refused_by_name(gguf_file, checkpoint):
    engine = llama_engine(gguf_file, checkpoint, max_batch_size=1)
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add(GenerationRequest([], GREEDY))
    with pytest.raises(ValueError, match="prompt is 64 tokens; the context window is 64 tokens"):
        engine.add(GenerationRequest([5] * 64, GREEDY))
    with pytest.raises(ValueError, match=r"token id\(s\) \[512, -1\] outside the vocabulary"):
        engine.add(GenerationRequest([5, 512, -1], GREEDY))
    engine.add(GenerationRequest([5], GREEDY))
    with pytest.raises(RuntimeError, match="no free row"):
        engine.add(GenerationRequest([5], GREEDY))
    with pytest.raises(ValueError, match="kv_type 'q4' is not one of f16, f32"):
        llama_engine(gguf_file, checkpoint, kv_type="q4")


# ---- load_engine and the GGUF cache ----


def test_auto_picks_llama_cpp_on_cpu_and_pytorch_elsewhere(monkeypatch):
    assert resolve_backend("auto", "cpu") == "llamacpp"
    assert resolve_backend("auto", "meta") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU, not on device 'meta'"):
        resolve_backend("llamacpp", "meta")
    assert resolve_backend("auto", "cpu", torch_only=True) == "torch"
    monkeypatch.setattr(backends, "llamacpp_installed", lambda: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match=r"needs llama-cpp-python: pip install 'charter\[llamacpp"):
        resolve_backend("llamacpp", "cpu")
    with pytest.raises(ValueError, match="backend 'tpu' is not one of auto, torch, llamacpp"):
        resolve_backend("tpu")


def test_load_engine_exports_once_per_checkpoint_content(checkpoint, tmp_path, tokenizer):
    engine = load_engine(checkpoint, "auto", max_batch_size=2, cache_dir=tmp_path)
    assert isinstance(engine.backend, LlamaCppBackend) and engine.max_batch_size == 2
    (exported,) = tmp_path.glob("*-f32.gguf")
    written = exported.stat().st_ino  # an export writes a new file (a rename), so a new inode
    load_engine(checkpoint, "llamacpp", cache_dir=tmp_path)
    assert list(tmp_path.glob("*.gguf")) == [exported]
    assert exported.stat().st_ino == written
    torch.manual_seed(1)
    changed = save_checkpoint(Transformer(micro()), tmp_path / "other", tokenizer)
    load_engine(changed, "llamacpp", dtype=torch.bfloat16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*-bf16.gguf"))) == 1
    assert isinstance(load_engine(checkpoint, "torch", cache_dir=tmp_path).backend, TorchBackend)


# ---- engine options ----


def parse_engine_options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return parser.parse_args(argv)


def test_engine_arguments_become_load_engine_keywords():
    args = parse_engine_options("--backend", "torch", "--dtype", "bf16", "--compile", "--frozen")
    assert args.backend == "torch"
    assert engine_options(args) == {
        "dtype": torch.bfloat16,
        "compile": True,
        "frozen": True,
        "int8": False,
    }
    defaults = engine_options(parse_engine_options())
    assert defaults == {"dtype": torch.float32, "compile": False, "frozen": False, "int8": False}


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("torch", {"frozen": True}, r"frozen \(--frozen\) .* needs compile \(--compile\)"),
        ("llamacpp", {"compile": True}, r"are options of the torch backend"),
        ("torch", {"int8": True, "device": "meta"}, r"int8 \(--int8\) runs on the CPU"),
        ("llamacpp", {"dtype": torch.float64}, r"torch.float64 has no GGUF equivalent"),
    ],
)
def test_engine_option_combinations_no_engine_runs_are_refused(
    checkpoint, backend, options, message
):
    with pytest.raises(ValueError, match=message):
        load_engine(checkpoint, backend, **options)


def test_options_only_torch_has_make_auto_choose_torch(checkpoint, monkeypatch):
    built = {}

    def recording_backend(model, **options):
        built.update(options)
        return "torch backend"

    monkeypatch.setattr(backends, "TorchBackend", recording_backend)  # nothing compiles
    monkeypatch.setattr(backends, "Engine", lambda backend, tokenizer: backend)
    assert load_engine(checkpoint, "auto", compile=True, frozen=True, max_len=32) == "torch backend"
    assert built == {"max_batch_size": 8, "max_len": 32, "compile": True, "frozen": True}


def test_int8_on_torch_quantises_every_linear_layer(checkpoint):
    engine = load_engine(checkpoint, "torch", int8=True, dtype=torch.bfloat16)
    modules = engine.backend.model.modules()
    linears = [m for m in modules if isinstance(m, torch.nn.Linear | Int8Linear)]
    assert linears and all(isinstance(m, Int8Linear) for m in linears)
    assert engine.generate([[5, 6, 7]], GREEDY)[0].stop_reason in (MAX_TOKENS, END_TURN)


# ---- --backend in the commands ----


def test_generate_with_either_backend_prints_the_same_greedy_text(checkpoint, capsys):
    outputs = []
    for backend in ("torch", "llamacpp"):
        arguments = ["--prompt", "Return the", "--raw", "--temperature", "0"]
        main(["generate", "--model", str(checkpoint), *arguments, "--backend", backend])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and len(outputs[0]) > 10


def test_served_llama_cpp_model_answers_as_the_pytorch_one(checkpoint):
    options = dict(max_batch_size=2, max_waiting=2, max_len=64, dtype=torch.float32, device="cpu")
    body = {
        "model": "m",
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    answers = []
    for backend in ("torch", "llamacpp"):
        registry = Registry([load_served_model(f"m={checkpoint}", backend=backend, **options)])
        assert isinstance(registry.get("m").generator.engine.backend, LlamaCppBackend) == (
            backend == "llamacpp"
        )
        try:
            with running_server(registry) as url:
                answers.append(httpx.post(f"{url}/v1/messages", json=body, timeout=30).json())
        finally:
            registry.stop()
    assert answers[0]["content"] == answers[1]["content"]
    assert answers[0]["usage"] == answers[1]["usage"]


# ---- SmolLM2 ----


@pytest.mark.slow
def test_smollm2_greedy_chat_equals_the_pytorch_engine(smollm2_dir):
    tokenizer = load_tokenizer(smollm2_dir)
    questions = ["What is the capital of France?", "Write a haiku about rain."]
    prompts = [
        tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": q}]))
        for q in questions
    ]
    params = SamplingParams(max_new_tokens=32, temperature=0)
    torch_engine = load_engine(smollm2_dir, "torch", max_batch_size=2, max_len=256)
    llama = load_engine(smollm2_dir, "llamacpp", max_batch_size=2, max_len=256)
    expected = torch_engine.generate(prompts, params)
    assert llama.generate(prompts, params) == expected
    assert "Paris" in expected[0].text


# ---- the benchmarks, on tiny inputs ----


@pytest.mark.slow
def test_decode_benchmark_measures_every_engine(tmp_path, capsys):
    engines = ["charter torch", "charter llama.cpp", "llama-cpp-python", "transformers"]
    engines += ["charter llama.cpp q8_0", "charter torch int8"]
    argv = ["--models", "micro", "--engines", *engines, "--repeats", "2", "--new-tokens", "8"]
    results = load_bench("decode_backends").main([*argv, "--work", str(tmp_path)])
    assert [(r.batch, r.engine) for r in results] == [(b, e) for b in (1, 8) for e in engines]
    assert all(len(r.runs) == 2 and r.tokens_per_second > 0 for r in results)
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| model | batch | engine | tokens/s | × llama-cpp-python |"
    assert table[4].startswith("| micro | 1 | llama-cpp-python | ") and table[4].endswith(
        "| 1.00 |"
    )


def test_decode_benchmark_refuses_a_context_shorter_than_its_tokens(capsys):
    with pytest.raises(SystemExit):
        load_bench("decode_backends").main(["--context", "100"])  # 32 + 128 tokens by default
    assert "--context: shorter than --prompt-tokens plus --new-tokens" in capsys.readouterr().err


def test_engine_load_benchmark_runs_the_serving_workload(tmp_path, tokenizer, capsys):
    checkpoint = save_checkpoint(Transformer(micro()), tmp_path / "micro", tokenizer)
    argv = ["--model", str(checkpoint), "--rows", "2", "--prompts", "5", "--max-tokens", "6"]
    result = load_bench("engine_load").main([*argv, "--context", "256"])
    assert 5 <= result["tokens"] <= 5 * 6  # each prompt's first token at least (EOS may end it)
    assert {rows for rows, _ in result["steps"]} <= {1, 2}
    assert 2 in {rows for rows, _ in result["steps"]}
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{result['tokens']} output tokens in ")
    assert [line.split(":")[0] for line in out[3:]] == [f"quarter {q}" for q in range(1, 5)]


@pytest.mark.slow
def test_serving_benchmark_compares_both_servers_at_every_level(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)  # a model whose greedy replies do not end at once
    model = Transformer(micro(tie_word_embeddings=False))
    checkpoint = save_checkpoint(model, tmp_path / "micro", tokenizer)
    argv = ["--model", str(checkpoint), "--clients", "1", "3", "--requests", "2"]
    argv += ["--max-tokens", "6", "--context", "256", "--port", str(free_port())]
    results = load_bench("serve_vs_llamacpp").main([*argv, "--cache", str(tmp_path)])
    for levels in results.values():
        assert [(r.clients, r.requests, r.ok, r.errors) for r in levels] == [
            (1, 2, 2, 0),
            (3, 6, 6, 0),
        ]
        assert all(r.output_tokens > 0 and r.ttft_p50 is not None for r in levels)
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| clients | charter serve tok/s | llama-cpp-python server tok/s")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 1", "| 3"]
