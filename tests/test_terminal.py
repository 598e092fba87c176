"""`charter chat`: multi-turn history, commands, streaming, and clean exits, driven through
in-memory streams and, for the exit paths, a real subprocess."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charter.chat import Conversation, Message, conversation_to_dict
from charter.checkpoint import load_checkpoint, save_checkpoint
from charter.infer.engine import Engine
from charter.infer.generator import Turn, user_turn
from charter.infer.local import LocalGenerator
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.terminal import PROMPT, ChatSession, chat_loop
from tests.helpers import micro
from tests.serve_helpers import ScriptedOutput, reply_ids, wait_for


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return save_checkpoint(Transformer(micro()), tmp_path_factory.mktemp("m") / "micro", tokenizer)


@pytest.fixture
def session(checkpoint, tokenizer):
    engine = Engine(TorchBackend(load_checkpoint(checkpoint), max_batch_size=1), tokenizer)
    with LocalGenerator(engine, "micro") as generator:
        yield ChatSession(generator, temperature=0, max_new_tokens=6)


@pytest.fixture
def engine(session) -> Engine:
    return session.generator.engine


@pytest.fixture
def requests(session, monkeypatch) -> list:
    """Every generation request the session sends to its engine, in order."""
    sent = []
    worker = session.generator.worker
    submit = worker.submit

    def recording_submit(job):
        sent.append(job.request)
        return submit(job)

    monkeypatch.setattr(worker, "submit", recording_submit)
    return sent


def as_dicts(history: list[Message]) -> list[dict]:
    return conversation_to_dict(Conversation(history))["messages"]


def chat(session: ChatSession, lines: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    chat_loop(session, io.StringIO(lines), stdout, stderr)
    return stdout.getvalue(), stderr.getvalue()


def expected_prompt(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


@pytest.fixture
def script(session, tokenizer, monkeypatch):
    """`script(reply, …)`: the next turns' replies, forced token by token (so they hold text:
    the micro model's own greedy output is whitespace, which a turn does not show)."""
    replies: list[str] = []
    worker = session.generator.worker
    submit = worker.submit

    def scripted_submit(job):
        ids = reply_ids(tokenizer, replies.pop(0))
        job.request.logits_processors.insert(0, ScriptedOutput(ids))
        return submit(job)

    monkeypatch.setattr(worker, "submit", scripted_submit)
    return lambda *texts: replies.extend(texts)


def test_every_turn_sees_the_whole_history(session, requests, tokenizer, script):
    script("Hi!", "Fine.")
    out, err = chat(session, "hello there\nand what next?\n")
    assert out == "Hi!\nFine.\n"  # only the replies, streamed, on stdout
    assert err.count(PROMPT) == 3  # asked for a line three times: two turns, then end of input
    history = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "and what next?"},
        {"role": "assistant", "content": "Fine."},
    ]
    assert as_dicts(session.history) == history
    # Charter's renderer gives the ids of the checkpoint's template (Hugging Face's view).
    assert requests[0].prompt_ids == expected_prompt(tokenizer, history[:1])
    assert requests[1].prompt_ids == expected_prompt(tokenizer, history[:3])


def test_a_reply_is_the_engines_greedy_completion(session, requests, tokenizer):
    chat(session, "hello there\n")
    model = session.generator.engine.backend.model
    fresh = Engine(TorchBackend(model, max_batch_size=1), tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=0)
    completion = fresh.generate([requests[0].prompt_ids], params)[0]
    assert requests[0].completion.token_ids == completion.token_ids != []


def test_reset_forgets_the_conversation(session, requests, tokenizer):
    _, err = chat(session, "first question\n/reset\nsecond question\n")
    assert "[conversation cleared]" in err
    assert requests[1].prompt_ids == expected_prompt(
        tokenizer, [{"role": "user", "content": "second question"}]
    )
    assert [m.role for m in session.history] == ["user", "assistant"]


def test_system_prompt_is_set_shown_and_kept_across_reset(session, requests, tokenizer):
    _, err = chat(session, "/system Be terse.\n/system\n/reset\nhi\n")
    assert "[system prompt set]" in err
    assert "[system prompt: 'Be terse.']" in err
    assert requests[0].prompt_ids == expected_prompt(
        tokenizer,
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
    )


def test_temp_sets_the_sampling_temperature_and_rejects_bad_values(session, requests):
    _, err = chat(session, "/temp 0.5\n/temp hot\n/temp -1\nhi\n")
    assert "[temperature 0.5]" in err
    assert err.count("error: /temp needs a number ≥ 0") == 2
    assert session.temperature == 0.5
    assert requests[0].params.temperature == 0.5


def test_unknown_command_and_blank_lines_send_nothing(session, requests):
    _, err = chat(session, "/frobnicate\n\n   \n/help\n")
    assert "error: unknown command /frobnicate; /help lists the commands" in err
    assert "/system TEXT" in err  # the help text
    assert requests == [] and session.history == []


def test_quit_ends_the_chat_before_later_lines(session, requests):
    chat(session, "/quit\nnever sent\n")
    assert requests == []


def test_a_long_reply_says_it_was_cut(session, engine):
    session.max_new_tokens = 2
    engine.eos_token_ids = set()  # so the reply cannot end on its own first
    out, err = chat(session, "tell me everything\n")
    assert "[reply cut at 2 tokens (--max-new-tokens)]" in err
    assert Turn(session.history[1].content, "max_tokens").text == out.removesuffix("\n")


def test_ctrl_c_during_a_reply_stops_it_and_the_chat_goes_on(session, engine, requests, script):
    class InterruptedTerminal(io.StringIO):
        """A terminal where Ctrl-C arrives as the first piece of the first reply is shown."""

        def __init__(self):
            super().__init__()
            self.interrupted = False

        def write(self, text):
            if not self.interrupted:
                self.interrupted = True
                raise KeyboardInterrupt
            return super().write(text)

    script("Hello", "Fine.")
    stdout, stderr = InterruptedTerminal(), io.StringIO()
    chat_loop(session, io.StringIO("first\nsecond\n"), stdout, stderr)
    assert stderr.getvalue().count("[reply stopped]") == 1
    wait_for(lambda: not engine.active_requests)  # the stopped request gave its row back
    assert requests[0].cancelled and not requests[1].cancelled
    history = as_dicts(session.history)
    assert history[1] == {"role": "assistant", "content": []}  # nothing was shown
    assert history[3]["content"] == "Fine."


def test_a_conversation_too_long_for_the_context_is_refused(session, engine):
    engine.max_len = 40
    out, err = chat(session, "word " * 60 + "\n")
    assert "error: prompt is" in err and "/reset starts a new conversation" in err
    assert out == "" and session.history == []


# ---- the command as a process ----


def chat_command(checkpoint) -> list[str]:
    return [sys.executable, "-m", "charter.cli", "chat", "--model", str(checkpoint)]


@pytest.mark.slow  # a fresh Python process that imports torch
def test_end_of_input_exits_with_status_0_and_stdout_holds_only_replies(checkpoint, tokenizer):
    options = ["--temperature", "0", "--max-new-tokens", "5", "--system", "Be kind."]
    result = subprocess.run(
        chat_command(checkpoint) + options,
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine = Engine(TorchBackend(load_checkpoint(checkpoint), max_batch_size=1), tokenizer)
    with LocalGenerator(engine, "micro") as generator:
        turn = generator.generate([user_turn("hi", "Be kind.", max_tokens=5, temperature=0)])[0]
    assert result.stdout == turn.text + "\n"
    assert "/help lists commands" in result.stderr


@pytest.mark.slow  # a fresh Python process that imports torch
def test_ctrl_c_at_the_prompt_exits_with_status_0(checkpoint):
    process = subprocess.Popen(
        chat_command(checkpoint),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while not seen.endswith(PROMPT) and time.monotonic() < deadline:
            seen += os.read(process.stderr.fileno(), 1).decode()
        assert seen.endswith(PROMPT), seen
        process.send_signal(signal.SIGINT)
        # communicate, not wait: it drains the pipes, so output at exit cannot block the process
        _, rest = process.communicate(timeout=30)
        assert process.returncode == 0, seen + rest
    finally:
        process.kill()


@pytest.mark.slow  # a fresh Python process that imports torch
def test_a_model_without_chat_template_is_refused(tmp_path, tokenizer):
    plain = type(tokenizer)(tokenizer.backend, {"eos_token": "<|endoftext|>"})
    directory = save_checkpoint(Transformer(micro()), tmp_path / "plain", plain)
    result = subprocess.run(chat_command(directory), input="", capture_output=True, text=True)
    assert result.returncode == 1
    assert "has no chat template; use `charter generate --raw`" in result.stderr
