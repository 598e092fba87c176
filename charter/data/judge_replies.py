"""Model-written replies for the safety judge: a model's own answers to the judge's training
requests, and the labels those answers can be given by rule.

The refusal head has to read replies like the ones it will judge: a small model's, which
deflect and lecture as often as they say "I can't". People's labels of such replies are the
test (docs/data/refusal-labels.jsonl), so these replies are labelled by rules that can be
defended without a person:

- a reply the refusal patterns flag (`charter.eval.refusal`, precision 8 / 8 on the hand
  labels) is a refusal (refusal 1);
- an unflagged reply to a benign request (request harm 0) did the task: a compliance that gives
  no harmful help (refusal 0, response harm 0);
- an unflagged reply to a harmful request may be an implicit refusal, a lecture or real help;
  no rule says which, so it is left out, counted.

    charter data judge-replies --model SPEC --requests cache/judge/train.jsonl \
        --out cache/judge/replies.jsonl [--per-source 100] [--max-new-tokens 96]
    charter data judge-sources --replies cache/judge/replies.jsonl …

The requests are the training split's rows with a request-harm label and no reply, at most
`per_source` of each source (spread evenly over it). Replies are greedy and written as they
come, a batch at a time; a second run with the same output continues after the last written
row, so an interrupted run loses at most one batch and writes nothing twice. A reply cut off by
the token limit is kept (the opening of a reply says whether it refuses).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from charter.chat import Conversation, Message, TextBlock
from charter.data.judge_sources import JudgeRow, SourceRows
from charter.data.sft import jsonl_lines
from charter.infer.generator import Generator, TurnOptions, TurnRequest

SOURCE = "model-replies"
UNLABELLED = "unflagged reply to a harmful request: no defensible label"


def requests_to_answer(
    path: Path, per_source: int, sources: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The request rows (a request-harm label, no reply) of judge JSONL `path` (of `sources`
    only, if given), at most `per_source` of each source, evenly spread over it, in file
    order."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for where, row in jsonl_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{where}: expected a judge row with a prompt")
        wanted = sources is None or row.get("source") in sources
        if wanted and row.get("request_harm") is not None and row.get("response") is None:
            by_source.setdefault(row.get("source", ""), []).append(row)
    chosen = []
    for rows in by_source.values():
        step = max(len(rows) / per_source, 1.0)
        chosen += [rows[int(i * step)] for i in range(min(per_source, len(rows)))]
    return chosen


def write_replies(
    generator: Generator,
    requests: list[dict[str, Any]],
    out: Path,
    options: TurnOptions,
    batch_size: int = 32,
) -> int:
    """Append the generator's reply to each request not yet in `out` (by prompt); returns how
    many were written now."""
    done = set()
    if out.exists():
        done = {row["prompt"] for _, row in jsonl_lines(out)}
    todo = [r for r in requests if r["prompt"] not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            conversations = [
                Conversation([Message("user", [TextBlock(r["prompt"])])]) for r in batch
            ]
            turns = generator.generate(
                [TurnRequest(c, options) for c in conversations],
                progress=f"replies {start + len(batch)}/{len(todo)}",
            )
            for request, turn in zip(batch, turns, strict=True):
                row = {
                    "prompt": request["prompt"],
                    "response": turn.text,
                    "request_harm": request["request_harm"],
                    "stop_reason": turn.stop_reason,
                    "model": generator.name,
                    "licence": request.get("licence", ""),
                    "where": request.get("where", ""),
                    "asked_in": request.get("source", ""),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
    return len(todo)


def read_replies(paths: list[Path], is_refusal: Callable[[str], bool]) -> SourceRows:
    """The labelled rows of reply files (the module's docstring says which labels, and why)."""
    rows, dropped = [], Counter()
    for path in paths:
        for where, data in jsonl_lines(path):
            for key in ("prompt", "response", "model"):
                if not isinstance(data.get(key), str):
                    raise ValueError(f"{where}: {key}: expected a string")
            if data.get("request_harm") not in (0, 1):
                raise ValueError(f"{where}: request_harm: expected 0 or 1")
            response = data["response"].strip()
            if not response:
                dropped["empty reply"] += 1
                continue
            licence = data.get("licence") or ""
            if is_refusal(response):
                labels = {"refusal": 1}
            elif data["request_harm"] == 0:
                labels = {"refusal": 0, "response_harm": 0}
            else:
                dropped[UNLABELLED] += 1
                continue
            rows.append(
                JudgeRow(
                    data["prompt"],
                    SOURCE,
                    licence,
                    f"{where} ({data['model']})",
                    response,
                    **labels,
                )
            )
    origin = ", ".join(str(p) for p in paths)
    return SourceRows(rows, dropped, origin)
