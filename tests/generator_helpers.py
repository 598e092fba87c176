"""A `Generator` whose model is a script, for testing what consumers do with turns (scoring,
tool rounds, filtering) without a model.

`ScriptedGenerator` answers each request with the raw text a model would write after the
prompt (`<think>`, `<tool_call>` tags and all), and parses it into content blocks with the chat
format's own parser, as `LocalGenerator` parses a model's output; so a malformed call comes
back as text, and thinking is parsed as a thinking block when the prompt opened one.

`recorded_jobs` watches a real `LocalGenerator` instead: the engine requests it submits (their
prompt ids, then their completions), optionally with their first tokens forced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from charter.chat.format import ChatFormat
from charter.infer.generator import END_TURN, TOOL_USE, Generator, Turn, TurnRequest
from charter.infer.local import LocalGenerator
from tests.serve_helpers import ScriptedOutput

# request → the text written after its prompt, or (text, stop reason)
Script = Callable[[TurnRequest], str | tuple[str, str]]


class ScriptedGenerator(Generator):
    """Answers every request from `script`; `requests` records what it was asked, in order,
    and `batches` the number of requests in each `generate` call."""

    def __init__(self, format: ChatFormat, script: Script, name: str = "scripted") -> None:
        self.format = format
        self.script = script
        self.name = name
        self.requests: list[TurnRequest] = []
        self.batches: list[int] = []

    @property
    def context_window(self) -> None:
        return None  # scripted prompts never outgrow it: that is the real generator's check

    def generate(self, requests, progress=None, errors="raise"):
        self.requests += requests
        self.batches.append(len(requests))
        return [self._turn(request) for request in requests]

    def _turn(self, request: TurnRequest) -> Turn:
        answer = self.script(request)
        text, stop_reason = answer if isinstance(answer, tuple) else (answer, END_TURN)
        # As LocalGenerator: with thinking on the prompt ends inside an open think block,
        # unless the turn continues the assistant's own words (a prefill).
        thinking = request.options.thinking_budget is not None
        prefill = request.conversation.messages[-1].role == "assistant"
        parser = self.format.parser(starts_in_thinking=thinking and not prefill)
        parser.feed(text)
        parser.finish()
        if stop_reason == END_TURN and any(b.type == TOOL_USE for b in parser.blocks):
            stop_reason = TOOL_USE
        return Turn(parser.blocks, stop_reason)

    async def open(self, request):
        raise NotImplementedError("scripted turns are not streamed")

    async def count_tokens(self, request):
        thinking = request.options.thinking_budget is not None
        return len(self.format.prompt(request.conversation, thinking=thinking))


def recorded_jobs(generator: LocalGenerator, monkeypatch, forced: Sequence[int] = ()) -> list:
    """Every job `generator` hands its engine's worker from now on, in order; with `forced`,
    each job's first tokens are those (the generator's own processors still override them)."""
    jobs = []
    submit = generator.worker.submit

    def recording_submit(job):
        if forced:
            job.request.logits_processors.insert(0, ScriptedOutput(list(forced)))
        jobs.append(job)
        return submit(job)

    monkeypatch.setattr(generator.worker, "submit", recording_submit)
    return jobs
