"""Generation: sampling rules, stop sequences, EOS, batching with the KV cache, seeds."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.utils import counters

from charter.infer.detokenizer import TextStream
from charter.infer.engine import CONTEXT_WINDOW, MAX_TOKENS, Backend, Engine, GenerationRequest
from charter.infer.int8_linear import quantize_int8
from charter.infer.sampling import SamplingParams, filter_logits, sample_next_token
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from tests.helpers import micro


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro(max_position_embeddings=64)).eval()


def naive_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


# ---- sampling rules ----


def test_top_k_keeps_exactly_the_k_best():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = filter_logits(logits, top_k=2, top_p=1.0).isfinite()
    assert kept.tolist() == [False, True, False, True, False]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    kept = filter_logits(probs.log(), top_k=0, top_p=0.75).isfinite()
    assert kept.tolist() == [False, True, False, True]  # 0.5 + 0.3 ≥ 0.75
    kept = filter_logits(probs.log(), top_k=0, top_p=0.8).isfinite()
    assert kept.tolist() == [False, True, False, True]  # exactly 0.8 is enough
    kept = filter_logits(probs.log(), top_k=0, top_p=0.01).isfinite()
    assert kept.tolist() == [False, True, False, False]  # the best token always stays


def test_temperature_zero_is_argmax_and_sampling_follows_the_tempered_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0])
    assert sample_next_token(logits, SamplingParams(temperature=0), None) == 2
    bf16 = torch.tensor([0.5, 3.0, -1.0, 2.0], dtype=torch.bfloat16)
    assert sample_next_token(bf16, SamplingParams(temperature=0), None) == 1
    params = SamplingParams(temperature=2.0, seed=0)
    generator = params.make_generator()
    counts = torch.bincount(
        torch.tensor([sample_next_token(logits, params, generator) for _ in range(6000)]),
        minlength=3,
    )
    expected = (logits / 2.0).softmax(-1) * 6000
    assert torch.allclose(counts.float(), expected, rtol=0.08)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_new_tokens", 0, "max_new_tokens must be ≥ 1"),
        ("temperature", -1.0, "temperature must be ≥ 0"),
        ("top_p", 0.0, "top_p must be in"),
        ("top_k", -2, "top_k must be ≥ 0"),
        ("stop", [""], "stop sequences must be non-empty"),
    ],
)
def test_invalid_sampling_params_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})


# ---- incremental detokenisation ----


def test_stop_string_split_across_tokens_is_found_and_excluded(tokenizer):
    stream = TextStream(tokenizer, stop=["END"])
    released = [stream.push(tokenizer.encode(ch)[0]) for ch in "ab EN"]
    assert "".join(released) == "ab "  # "EN" is held back: it may begin "END"
    assert stream.push(tokenizer.encode("D")[0]) == ""
    assert stream.stop_sequence == "END" and stream.text == "ab "


def test_held_back_prefix_is_released_when_it_is_not_a_stop(tokenizer):
    stream = TextStream(tokenizer, stop=["END"])
    out = "".join(stream.push(tokenizer.encode(ch)[0]) for ch in "xEN")
    assert out == "x"
    assert stream.push(tokenizer.encode("o")[0]) == "ENo"
    assert stream.stop_sequence is None


def test_a_character_split_across_byte_tokens_is_released_whole(tokenizer):
    stream = TextStream(tokenizer)
    # "é" is two bytes; with 512 merges it may be one or two tokens: force two byte tokens.
    byte_ids = [tokenizer.backend.token_to_id(tok) for tok in ("Ã", "©")]
    assert None not in byte_ids
    assert stream.push(byte_ids[0]) == ""
    assert stream.push(byte_ids[1]) == "é"
    assert stream.finish() == ""


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, 511), max_size=40),
    stop=st.sampled_from([[], ["END"], ["\n\n", "x"]]),
)
def test_streamed_text_is_the_whole_decoding_up_to_the_first_stop(tokenizer, ids, stop):
    # Any ids, including byte tokens that leave characters unfinished or invalid.
    stream = TextStream(tokenizer, stop=stop)
    pieces = []
    for token in ids:
        pieces.append(stream.push(token))
        if stream.stop_sequence is not None:
            break
    pieces.append(stream.finish())
    whole = tokenizer.decode(ids)
    found = [at for at in (whole.find(s) for s in stop) if at != -1]
    expected = whole[: min(found)] if found else whole
    assert "".join(pieces) == stream.text == expected
    assert (stream.stop_sequence is not None) == bool(found)


# ---- the engine ----


def test_batched_greedy_equals_naive_loop_for_prompts_of_different_lengths(model, tokenizer):
    torch.manual_seed(4)
    prompts = [torch.randint(8, 512, (n,)).tolist() for n in (3, 11, 7, 20, 1)]
    # 5 prompts, 3 rows
    engine = Engine(TorchBackend(model, max_batch_size=3), tokenizer, eos_token_ids=[])
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    for prompt, completion in zip(prompts, completions):
        assert completion.token_ids == naive_greedy(model, prompt, 12)
        assert completion.stop_reason == "max_tokens"
        assert completion.prompt_tokens == len(prompt)
        assert completion.text == tokenizer.decode(completion.token_ids)
    assert engine.active_requests == []


def test_top_k_one_and_tiny_top_p_are_greedy(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    prompt = [[10, 20, 30]]
    greedy = engine.generate(prompt, SamplingParams(max_new_tokens=10, temperature=0))
    for params in (
        SamplingParams(max_new_tokens=10, temperature=1.5, top_k=1, seed=1),
        SamplingParams(max_new_tokens=10, temperature=1.5, top_p=1e-6, seed=1),
    ):
        assert engine.generate(prompt, params)[0].token_ids == greedy[0].token_ids


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    alone = engine.generate([[5, 6, 7]], params)[0].token_ids
    others = SamplingParams(max_new_tokens=16, temperature=1.0, seed=99)
    batched = engine.generate([[1, 2], [5, 6, 7], [9]], [others, params, others])
    assert batched[1].token_ids == alone
    different_seed = SamplingParams(max_new_tokens=16, temperature=1.0, seed=8)
    assert engine.generate([[5, 6, 7]], different_seed)[0].token_ids != alone


def test_eos_ends_the_turn_and_is_not_part_of_the_output(model, tokenizer):
    prompt = [10, 20, 30]
    greedy = naive_greedy(model, prompt, 6)
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[greedy[4]])
    completion = engine.generate([prompt], SamplingParams(max_new_tokens=20, temperature=0))[0]
    assert completion.stop_reason == "end_turn"
    assert completion.token_ids == greedy[: greedy.index(greedy[4])]


def test_stop_sequence_ends_generation_and_is_excluded(model, tokenizer):
    prompt = [10, 20, 30]
    tokens = naive_greedy(model, prompt, 20)
    full = tokenizer.decode(tokens)
    # a stop string straddling the boundary between two generated tokens
    boundary = len(tokenizer.decode(tokens[:8]))
    stop = full[boundary - 1 : boundary + 1]
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    pieces: list[str] = []
    request = GenerationRequest(
        prompt,
        SamplingParams(max_new_tokens=20, temperature=0, stop=["never-seen", stop]),
        on_text=pieces.append,
    )
    list(engine.run([request]))
    completion = request.completion
    assert completion.stop_reason == "stop_sequence" and completion.stop_sequence == stop
    assert completion.text == full[: full.index(stop)]
    assert "".join(pieces) == completion.text  # streamed pieces never include the stop string


def test_context_window_stops_generation(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])  # a window of 64 tokens
    completion = engine.generate(
        [list(range(8, 68))], SamplingParams(max_new_tokens=50, temperature=0)
    )[0]
    assert completion.stop_reason == "model_context_window_exceeded"
    assert completion.prompt_tokens + len(completion.token_ids) == 64
    with pytest.raises(ValueError, match="prompt is 64 tokens; the context window is 64"):
        engine.generate([list(range(64))], SamplingParams())


def test_prompt_ids_outside_the_vocabulary_are_refused_and_take_no_row(model, tokenizer):
    engine = Engine(TorchBackend(model, max_batch_size=1), tokenizer, eos_token_ids=[])
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"token id\(s\) \[{vocab}, -1\] outside the vocabulary"):
        engine.add(GenerationRequest([5, vocab, -1], SamplingParams()))
    assert engine.active_requests == [] and engine.free_rows == 1


def test_cancelled_request_leaves_the_batch_at_the_next_step(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    a = GenerationRequest([1, 2, 3], SamplingParams(max_new_tokens=30, temperature=0))
    b = GenerationRequest([4, 5], SamplingParams(max_new_tokens=30, temperature=0))
    engine.add(a)
    engine.add(b)
    engine.step()
    a.cancelled = True
    engine.step()
    assert engine.active_requests == [b]
    assert len(b.generated) == 3 and len(a.generated) == 2
    rest = naive_greedy(model, [4, 5], 3)
    assert b.generated == rest  # moving b's cache row kept its state intact


class NextIdBackend(Backend):
    """A backend without a model, for the engine alone: the next token is always the last one
    plus one. It records the rows the engine prefills and moves."""

    batch_size, max_len, vocab_size, eos_token_ids = 2, 16, 512, []
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.prefilled, self.moves = [], []

    def prefill(self, prompt: list[int], row: int) -> torch.Tensor:
        self.prefilled.append(row)
        return self.decode([prompt[-1]])[0]

    def decode(self, last_tokens: list[int]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(last_tokens) + 1, 512).float()  # (B, V)

    def move_row(self, src: int, dst: int) -> None:
        self.moves.append((src, dst))

    def token_logprobs(self, sequences, starts, batch_size=8):
        raise NotImplementedError("NextIdBackend cannot score")


def test_the_engine_schedules_rows_on_any_backend(tokenizer):
    backend = NextIdBackend()
    engine = Engine(backend, tokenizer, eos_token_ids=[])
    prompts = [[5], [9, 10], [20], list(range(100, 114))]
    params = [SamplingParams(max_new_tokens=n, temperature=0) for n in (3, 5, 2, 10)]
    completions = engine.generate(prompts, params)
    assert [c.token_ids for c in completions] == [
        [6, 7, 8],
        [11, 12, 13, 14, 15],
        [21, 22],
        [114, 115],
    ]
    assert [c.stop_reason for c in completions] == [MAX_TOKENS] * 3 + [CONTEXT_WINDOW]
    # [5] leaves row 0 first and [9, 10] moves into it from row 1, which [20] and then the
    # long prompt take in turn.
    assert backend.prefilled == [0, 1, 1, 1] and backend.moves == [(1, 0)]
    with pytest.raises(NotImplementedError, match="NextIdBackend cannot score"):
        engine.token_logprobs([[1, 2]], [1])


def test_stream_yields_the_same_text_as_generate(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    params = SamplingParams(max_new_tokens=15, temperature=0)
    pieces = list(engine.stream([3, 4, 5], params))
    assert "".join(pieces) == engine.generate([[3, 4, 5]], params)[0].text
    assert len(pieces) > 1


@pytest.mark.slow
def test_compiled_decode_step_gives_the_eager_tokens(model, tokenizer):
    """One compilation (dynamic batch and length) serves a batch that shrinks and refills."""
    torch.manual_seed(5)
    prompts = [torch.randint(8, 512, (n,)).tolist() for n in (3, 11, 7, 20, 1)]
    params = [SamplingParams(max_new_tokens=n, temperature=0) for n in (12, 5, 9, 3, 12)]
    eager = Engine(TorchBackend(model, max_batch_size=3), tokenizer, eos_token_ids=[])
    compiled = Engine(
        TorchBackend(model, max_batch_size=3, compile=True), tokenizer, eos_token_ids=[]
    )
    expected = eager.generate(prompts, params)
    assert [c.token_ids for c in compiled.generate(prompts, params)] == [
        c.token_ids for c in expected
    ]


@pytest.mark.slow
def test_frozen_decode_step_gives_the_eager_tokens(model, tokenizer):
    """Compiled ahead of time, one graph serves a batch that shrinks to one row and refills,
    and a row that decodes up to the last position of the context window. The model's MLPs are
    in int8, its attention in fp32, so that one compilation covers both kinds of frozen product:
    inductor's float kernels, and oneDNN's int8 linear, which every int8 product becomes."""
    mixed = copy.deepcopy(model)
    for block in mixed.layers:
        quantize_int8(block.mlp)
    torch.manual_seed(6)
    prompts = [torch.randint(8, 512, (n,)).tolist() for n in (4, 9, 58, 6)]
    params = [SamplingParams(max_new_tokens=n, temperature=0) for n in (8, 3, 12, 9)]
    eager = Engine(TorchBackend(mixed, max_batch_size=2), tokenizer, eos_token_ids=[])
    frozen = Engine(
        TorchBackend(mixed, max_batch_size=2, compile=True, frozen=True),
        tokenizer,
        eos_token_ids=[],
    )
    expected = eager.generate(prompts, params)
    assert expected[2].stop_reason == "model_context_window_exceeded"  # reached position 63
    counters.clear()
    got = frozen.generate(prompts, params)
    assert [(c.token_ids, c.stop_reason) for c in got] == [
        (c.token_ids, c.stop_reason) for c in expected
    ]
    # inductor's count of int8 products rewritten into oneDNN's linear over prepacked weights
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 3 * len(mixed.layers)
    assert frozen.generate([prompts[0]], params[0])[0].token_ids == expected[0].token_ids


def test_frozen_without_compile_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="frozen=True is a way of compiling"):
        Engine(TorchBackend(model, frozen=True), tokenizer)
