"""The generation core below the Generator: the engine's hooks, the thinking budget, and the
worker thread (continuous batching, the bounded queue, cancellation within one step, failures)."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from charter.chat.template import THINK_CLOSE
from charter.infer.driver import ModelWorker, StreamingJob
from charter.infer.engine import Engine, GenerationRequest
from charter.infer.generator import Overloaded
from charter.infer.sampling import SamplingParams
from charter.infer.thinking import ThinkingBudget, force_token
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from tests.helpers import micro
from tests.serve_helpers import ScriptedOutput, wait_for

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro()).eval()


def submit(worker: ModelWorker, request: GenerationRequest) -> StreamingJob:
    """Submit `request` from the running event loop, as the server does."""
    return worker.submit(StreamingJob(request, asyncio.get_running_loop()))


def greedy(engine: Engine, prompt: list[int], n: int = 12) -> list[int]:
    params = SamplingParams(max_new_tokens=n, temperature=0)
    return engine.generate([prompt], params)[0].token_ids


# ---- engine hooks ----


def test_logits_processors_force_tokens_then_sampling_resumes(model, tokenizer):
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    forced = [300, 301, 302]
    request = GenerationRequest([5, 6, 7], GREEDY, logits_processors=[ScriptedOutput(forced)])
    list(engine.run([request]))
    assert request.completion.token_ids[:3] == forced
    # After the script the model continues greedily from what was forced.
    assert request.completion.token_ids[3:] == greedy(engine, [5, 6, 7, *forced], 9)


def test_a_request_ending_on_its_first_token_is_returned_by_step(model, tokenizer):
    first = greedy(Engine(TorchBackend(model), tokenizer, eos_token_ids=[]), [9, 10], 1)[0]
    engine = Engine(TorchBackend(model), tokenizer, eos_token_ids=[first])
    request = GenerationRequest([9, 10], GREEDY)
    engine.add(request)
    assert engine.step() == [request]
    assert request.completion.stop_reason == "end_turn" and request.completion.token_ids == []
    assert engine.active_requests == []


# ---- the thinking budget ----


def test_thinking_budget_forces_the_close_after_budget_tokens(tokenizer):
    budget = ThinkingBudget(tokenizer, budget=3)
    logits = torch.zeros(tokenizer.vocab_size)
    generated = [40, 41, 42]
    assert torch.equal(budget(generated[:2], logits), logits)  # within the budget: untouched
    closing = []
    for _ in budget.close_ids:
        token = int(budget(generated + closing, logits).argmax())
        closing.append(token)
    assert closing == budget.close_ids
    assert tokenizer.decode(closing) == f"\n{THINK_CLOSE}\n"
    assert torch.equal(budget(generated + closing, logits), logits)  # then the answer is free


def test_thinking_budget_leaves_a_model_that_closed_its_thinking_alone(tokenizer):
    budget = ThinkingBudget(tokenizer, budget=5)
    logits = torch.zeros(tokenizer.vocab_size)
    closed = tokenizer.encode(f"ok{THINK_CLOSE}", special_tokens=False)
    assert torch.equal(budget(closed, logits), logits)
    assert torch.equal(budget(closed + [40] * 10, logits), logits)  # long past the budget


def test_thinking_budget_closes_the_block_instead_of_ending_the_turn(tokenizer):
    eot = [tokenizer.token_id("<|im_end|>"), tokenizer.token_id("<|endoftext|>")]
    budget = ThinkingBudget(tokenizer, budget=50, end_of_turn_ids=eot)
    logits = torch.zeros(tokenizer.vocab_size)
    logits[40], logits[eot[0]] = 2.0, 1.0  # ending the turn is likely, but not the most
    masked = budget([40], logits)
    assert masked[eot].tolist() == [float("-inf")] * 2  # so it cannot be sampled
    others = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
    others[eot] = False
    assert torch.equal(masked[others], logits[others])  # every other token as it was
    logits[eot[1]] = 3.0  # now the model would end its turn inside the block: it closes it
    closing = []
    for _ in budget.close_ids:
        closing.append(int(budget([40, *closing], logits).argmax()))
    assert tokenizer.decode(closing) == f"\n{THINK_CLOSE}\n"
    assert torch.equal(budget([40, *closing], logits), logits)  # then it may end the turn


def test_force_token_makes_one_token_certain():
    forced = force_token(torch.tensor([3.0, 1.0, 2.0]), 1)
    assert forced.softmax(-1).tolist() == [0.0, 1.0, 0.0]


# ---- the worker ----


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


@pytest.fixture
def worker(model, tokenizer):
    worker = ModelWorker(
        Engine(TorchBackend(model, max_batch_size=2), tokenizer, eos_token_ids=[]), max_waiting=3
    )
    worker.start()
    yield worker
    worker.stop()


async def collect(job) -> tuple[str, object]:
    pieces = [piece async for piece in job.text()]
    return "".join(pieces), job.completion


def test_worker_batches_continuously_and_matches_the_engine_alone(worker, model, tokenizer):
    """Five requests on two rows: each joins when a row frees, at a step boundary, and each
    completion equals what it gets alone."""
    prompts = [[5, 6], [7, 8, 9], [10], [11, 12, 13, 14], [15, 16]]
    lengths = [3, 12, 5, 8, 2]

    async def main():
        jobs = [
            submit(worker, GenerationRequest(p, SamplingParams(max_new_tokens=n, temperature=0)))
            for p, n in zip(prompts, lengths)
        ]
        return await asyncio.gather(*(collect(job) for job in jobs))

    results = run(main())
    alone = Engine(TorchBackend(model), tokenizer, eos_token_ids=[])
    for prompt, n, (text, completion) in zip(prompts, lengths, results):
        assert completion.token_ids == greedy(alone, prompt, n)
        assert text == completion.text
    stats = worker.stats()
    assert (stats.completed, stats.active, stats.waiting) == (5, 0, 0)


def test_a_full_queue_is_overloaded(worker):
    slow = SamplingParams(max_new_tokens=200, temperature=0)

    async def main():
        jobs = [
            submit(
                worker, GenerationRequest([5], slow, logits_processors=[ScriptedOutput([], 0.01)])
            )
            for _ in range(5)  # two rows + three waiting
        ]
        with pytest.raises(
            Overloaded, match=r"all 2 sequence slots are busy and the waiting queue \(3\) is full"
        ):
            submit(worker, GenerationRequest([5], slow))
        for job in jobs:
            job.cancel()

    run(main())
    wait_for(lambda: worker.stats().active == 0 and worker.stats().waiting == 0)


def test_cancelling_frees_the_row_within_one_step(worker):
    async def main():
        request = GenerationRequest(
            [5, 6],
            SamplingParams(max_new_tokens=250, temperature=0),
            logits_processors=[ScriptedOutput([], delay=0.005)],
        )
        job = submit(worker, request)
        async for _ in job.text():
            if len(request.generated) >= 5:
                break
        job.cancel()
        return request, job

    request, job = run(main())
    stats = wait_for(lambda: (s := worker.stats()).active == 0 and s)
    assert stats.cancelled == 1 and stats.completed == 0
    assert stats.max_tokens_after_cancel <= 1
    generated = len(request.generated)
    assert generated - job.tokens_at_cancel <= 1
    time.sleep(0.05)
    assert len(request.generated) == generated  # nothing more was decoded for it


def test_a_failing_step_fails_its_requests_and_the_worker_goes_on(worker):
    def explode(generated, logits):
        if len(generated) == 2:
            raise RuntimeError("boom")
        return logits

    async def main():
        job = submit(worker, GenerationRequest([5], GREEDY, logits_processors=[explode]))
        with pytest.raises(RuntimeError, match="generation failed: boom"):
            await collect(job)
        return await collect(submit(worker, GenerationRequest([5], GREEDY)))

    text, completion = run(main())
    assert len(completion.token_ids) == 12 and completion.stop_reason == "max_tokens"


def test_a_prompt_longer_than_the_context_fails_only_its_request(worker):
    async def main():
        too_long = submit(worker, GenerationRequest(list(range(8, 300)), GREEDY))
        fine = submit(worker, GenerationRequest([5], GREEDY))
        with pytest.raises(ValueError, match="prompt is 292 tokens; the context window is 256"):
            await collect(too_long)
        return await collect(fine)

    assert run(main())[1].stop_reason == "max_tokens"
