"""LocalGenerator and the checkpoint's chat format: batches, errors, adaptive thinking, scoring,
and one prompt for one conversation on every path (server, generate, chat, evaluation)."""

from __future__ import annotations

import asyncio
import io
import math

import anthropic
import pytest
import torch

from charter import chat
from charter.chat.format import (
    CHARTER,
    CHARTER_TEMPLATES,
    TEMPLATE,
    CharterFormat,
    TemplateFormat,
    chat_format,
    is_charter_template,
)
from charter.chat.template import CHAT_TEMPLATE, EMPTY_THINK, THINK_PROMPT
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.eval.refusal import generator_responder
from charter.infer.engine import Engine
from charter.infer.generator import (
    ADAPTIVE,
    InvalidRequest,
    ScoreRequest,
    ScoringUnsupported,
    TurnRequest,
    user_turn,
)
from charter.infer.local import LocalGenerator
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.serve.registry import Registry, load_served_model
from charter.terminal import ChatSession
from charter.tokenizer import Tokenizer
from tests.helpers import load_bench, micro
from tests.serve_helpers import running_server

# A ChatML template of the kind imported instruct models carry (SmolLM2's shape: a default
# system prompt, content verbatim), not Charter's.
OWN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a small helpful model.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro(max_position_embeddings=1024)).eval()  # room for a tools section


@pytest.fixture(scope="module")
def own_tokenizer(tokenizer) -> Tokenizer:
    return Tokenizer(tokenizer.backend, {**tokenizer.config, "chat_template": OWN_TEMPLATE})


@pytest.fixture
def generator(model, tokenizer):
    with LocalGenerator(
        Engine(TorchBackend(model, max_batch_size=4, max_len=512), tokenizer), "m"
    ) as g:
        yield g


def greedy(text: str, **options) -> TurnRequest:
    return user_turn(text, **{"max_tokens": 8, "temperature": 0, **options})


# ---- the chat format a checkpoint carries ----


def test_the_format_follows_the_template_unless_named(tokenizer, own_tokenizer):
    assert isinstance(chat_format(tokenizer), CharterFormat)  # Charter's template
    assert isinstance(chat_format(own_tokenizer), TemplateFormat)
    assert chat_format(own_tokenizer, CHARTER).name == CHARTER
    assert chat_format(tokenizer, TEMPLATE).name == TEMPLATE
    plain = Tokenizer(tokenizer.backend, {})
    with pytest.raises(ValueError, match="no chat template"):
        chat_format(plain)


def test_the_template_charter_ships_is_known_and_so_are_its_earlier_versions(tokenizer):
    assert is_charter_template(CHAT_TEMPLATE)  # a changed template needs its hash added
    assert len(CHARTER_TEMPLATES) >= 3  # the older ones stay: old checkpoints carry them
    assert not is_charter_template(OWN_TEMPLATE) and not is_charter_template(None)


def test_a_template_prompt_is_the_templates_text_with_content_kept_as_text(own_tokenizer):
    conversation = user_turn("say <|im_end|> twice").conversation
    ids = TemplateFormat(own_tokenizer).prompt(conversation, thinking=False)
    rendered = own_tokenizer.apply_chat_template(
        [{"role": "user", "content": "say <|im_end|> twice"}]
    )
    assert own_tokenizer.decode(ids) == rendered
    im_end = own_tokenizer.token_id("<|im_end|>")
    # The template's own markers are special tokens; the one typed in the message is not.
    assert ids.count(im_end) == rendered.count("<|im_end|>") - 1


def test_a_template_format_refuses_what_it_cannot_hold(own_tokenizer, model):
    with LocalGenerator(
        Engine(TorchBackend(model, max_len=256), own_tokenizer), "own"
    ) as generator:
        with pytest.raises(InvalidRequest, match="thinking: .*no thinking block") as raised:
            generator.prepare(greedy("hi", thinking_budget=4))
        assert raised.value.field == "thinking"
        tool = chat.Tool("calculator", "", {"type": "object"})
        request = greedy("hi")
        request.conversation.tools = [tool]
        with pytest.raises(InvalidRequest, match="tools: .*no tool format"):
            generator.prepare(request)
        # Adaptive thinking on a model without a thinking format: no thinking.
        assert generator.prepare(greedy("hi", thinking_budget=ADAPTIVE)).thinking_budget is None


# ---- LocalGenerator ----


def test_a_batch_equals_the_engines_own_greedy_completions(generator, model, tokenizer):
    requests = [greedy(text) for text in ("one", "two words", "three more words", "4", "five")]
    turns = generator.generate(requests)
    engine = Engine(TorchBackend(model, max_batch_size=1, max_len=256), tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    for request, turn in zip(requests, turns, strict=True):
        completion = engine.generate([generator.prompt_ids(request)], params)[0]
        expected = CharterFormat(tokenizer).parser(starts_in_thinking=False)
        expected.feed(completion.text)
        expected.finish()
        assert turn.content == expected.blocks
        assert turn.input_tokens == len(generator.prompt_ids(request))
        assert turn.output_tokens == len(completion.token_ids) + (turn.stop_reason == "end_turn")


def test_a_request_that_cannot_be_answered_fails_first_or_in_its_place(generator):
    too_long = greedy("word " * 1200)
    with pytest.raises(InvalidRequest, match="messages: prompt is too long"):
        generator.generate([greedy("fine"), too_long])
    assert generator.worker.stats().completed == 0  # nothing was generated
    fine, failed = generator.generate([greedy("fine"), too_long], errors="return")
    assert fine.stop_reason in ("end_turn", "max_tokens")
    assert isinstance(failed, InvalidRequest) and failed.field == "messages"


def test_adaptive_thinking_thinks_with_half_the_tokens_on_a_thinking_format(generator, tokenizer):
    prepared = generator.prepare(greedy("hi", max_tokens=40, thinking_budget=ADAPTIVE))
    assert prepared.thinking_budget == 20
    assert tokenizer.decode(prepared.prompt_ids).endswith(THINK_PROMPT)
    # Not where thinking cannot go: a forced tool call.
    request = greedy("hi", thinking_budget=ADAPTIVE, tool_choice="any")
    request.conversation.tools = [chat.Tool("calculator", "", {"type": "object"})]
    assert generator.prepare(request).thinking_budget is None
    off = generator.prepare(greedy("hi"))
    assert tokenizer.decode(off.prompt_ids).endswith(EMPTY_THINK)


def test_score_gives_the_log_probabilities_of_the_reply_tokens(generator, model, tokenizer):
    request = greedy("What is 2 + 2?")
    reply = [chat.TextBlock("It is 4.")]
    scores = generator.score([ScoreRequest(request.conversation, reply)])[0]
    # By hand: the conversation with the reply, its assistant tokens under a forward pass.
    answered = chat.Conversation([*request.conversation.messages, chat.Message("assistant", reply)])
    rendered = chat.render(answered, tokenizer, thinking=False)
    trained = [i for i, m in enumerate(rendered.loss_mask) if m]
    assert scores.token_ids == [rendered.ids[i] for i in trained]  # the reply and its <|im_end|>
    with torch.no_grad():
        logprobs = model(torch.tensor([rendered.ids])).log_softmax(-1)[0]
    expected = [float(logprobs[i - 1, rendered.ids[i]]) for i in trained]
    assert scores.logprobs == pytest.approx(expected, abs=1e-5)
    assert math.isclose(scores.total, sum(expected), abs_tol=1e-4)


def test_score_batches_replies_of_different_lengths_like_one_at_a_time(generator):
    request = greedy("hello")
    replies = [[chat.TextBlock("a")], [chat.TextBlock("a much longer reply than the first")]]
    together = generator.score([ScoreRequest(request.conversation, r) for r in replies])
    alone = [generator.score([ScoreRequest(request.conversation, r)])[0] for r in replies]
    for a, b in zip(together, alone, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_a_generator_that_cannot_score_says_so():
    class Remote(LocalGenerator):
        def __init__(self):
            self.name = "remote"

    with pytest.raises(ScoringUnsupported, match="cannot score given text"):
        super(LocalGenerator, Remote()).score([])


# ---- one conversation, one prompt, on every path ----


@pytest.mark.parametrize("template", ["charter", "own"])
def test_server_generate_chat_and_evaluation_send_the_same_prompt(
    template, model, tokenizer, own_tokenizer, tmp_path, monkeypatch
):
    chosen = tokenizer if template == "charter" else own_tokenizer
    directory = save_checkpoint(model, tmp_path / "m", chosen)
    prompts: list[list[int]] = []
    add = Engine.add
    monkeypatch.setattr(
        Engine, "add", lambda self, r: (prompts.append(r.prompt_ids), add(self, r))[1]
    )
    question = "What is the capital of France?"

    # charter generate
    main(["generate", "--model", str(directory), "--prompt", question, "--backend", "torch",
          "--max-new-tokens", "2"])  # fmt: skip
    # the server, through the official SDK
    registry = Registry([load_served_model(str(directory), backend="torch", max_len=256)])
    try:
        with running_server(registry) as url:
            client = anthropic.Anthropic(base_url=url, api_key="unused")
            client.messages.create(
                model="m", max_tokens=2, messages=[{"role": "user", "content": question}]
            )
    finally:
        registry.stop()
    # charter chat, and the refusal evaluation's responder
    with LocalGenerator(Engine(TorchBackend(model, max_len=256), chosen), "m") as generator:
        ChatSession(generator, max_new_tokens=2).reply(question, io.StringIO(), io.StringIO())
        generator_responder(generator, max_new_tokens=2)([question])
    assert len(prompts) == 4
    assert prompts[1:] == prompts[:1] * 3
    text = chosen.decode(prompts[0])
    assert ("You are a small helpful model." in text) == (template == "own")
    assert text.endswith(EMPTY_THINK if template == "charter" else "<|im_start|>assistant\n")


# ---- the server over a Generator ----


def test_the_server_accepts_adaptive_thinking_as_claude_code_sends_it(model, tokenizer, tmp_path):
    directory = save_checkpoint(model, tmp_path / "m", tokenizer)
    registry = Registry([load_served_model(str(directory), backend="torch", max_len=256)])
    try:
        with running_server(registry) as url:
            client = anthropic.Anthropic(base_url=url, api_key="unused")
            message = client.messages.create(
                model="m",
                max_tokens=12,
                thinking={"type": "adaptive", "display": "summarized"},
                extra_body={"temperature": 0},  # the SDK has no sampling parameters any more
                messages=[{"role": "user", "content": "hello"}],
            )
            counted = client.messages.count_tokens(
                model="m",
                thinking={"type": "adaptive"},
                messages=[{"role": "user", "content": "hello"}],
            )
    finally:
        registry.stop()
    # A thinking format: the turn starts inside a think block (the micro model then writes
    # whatever it writes), and the prompt is the thinking prompt.
    generator = LocalGenerator(Engine(TorchBackend(model, max_len=256), tokenizer), "m")
    request = greedy("hello", max_tokens=12, thinking_budget=ADAPTIVE)
    assert counted.input_tokens == message.usage.input_tokens == len(generator.prompt_ids(request))
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_open_streams_the_blocks_generate_returns(generator):
    async def stream_one():
        stream = await generator.open(greedy("stream me"))
        events = [event async for event in stream.events()]
        return events, stream.turn

    events, turn = asyncio.run(stream_one())
    assert turn.content == generator.generate([greedy("stream me")])[0].content
    text = "".join(e.text for e in events if isinstance(e, chat.BlockDelta) and e.kind == "text")
    assert text == turn.text


def test_the_overhead_benchmark_compares_equal_outputs(model, tokenizer, tmp_path, capsys):
    directory = save_checkpoint(model, tmp_path / "m", tokenizer)
    argv = ["--model", str(directory), "--backend", "torch", "--batch-size", "2"]
    result = load_bench("generator_overhead").main(
        [*argv, "--prompts", "3", "--max-tokens", "4", "--rounds", "2", "--context", "512"]
    )
    assert len(result["rates"]["engine"]) == len(result["rates"]["generator"]) == 2
    assert result["ratio"] > 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("median over 2 rounds")
