"""Scoring with a trained judge (`charter.train.judge`): one forward pass per batch of rows (a
prefill, nothing generated) gives each row the judge's probabilities.

    charter judge score --judge RUN/best rows.jsonl --out scored.jsonl

    judge = Judge.load("RUN/best")
    judge.score([{"prompt": "How do I pick a lock?"}])
    → [{"request_harm": 0.71, "category": "weapons", "category_probability": 0.4}]

A row is `{"prompt", "response"?}` or a Messages-shaped `{"messages", "system"?}` (a final
assistant message is the reply). Every row gets `request_harm` (the probability that the request
is harmful) and `category` (the most likely category, "none" included) with its probability; a
row with a reply also gets `refusal` and `response_harm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from charter.checkpoint import CheckpointError, load_score_model, load_tokenizer
from charter.data.judge_sources import CATEGORIES
from charter.data.sft import jsonl_lines
from charter.files import read_json, resolve_directory, write_scored_jsonl
from charter.heads import ScoreModel
from charter.infer.backends import DTYPES
from charter.infer.int8_linear import quantize_int8
from charter.train.judge import BINARY, OUTPUTS, JudgeInput, Renderer, read_input

# The precisions a judge is loaded in, by name (`--dtype`, a safety config's `judge_dtype`).
PRECISIONS = (*DTYPES, "int8")


class Scorer(Protocol):
    """What the red-team rounds and the safety guard need of a judge: `Judge`, or a stand-in
    in tests."""

    def score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


class Judge:
    def __init__(self, model: ScoreModel, renderer: Renderer) -> None:
        if model.config.pad_token_id != renderer.pad_id:
            raise ValueError(
                f"the judge pads with token {model.config.pad_token_id}, its tokenizer with "
                f"{renderer.pad_id}"
            )
        self.model, self.renderer = model.eval(), renderer

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        int8: bool = False,
    ) -> Judge:
        """The judge in `directory`. `int8` (CPU, from fp32): its decoder's linear layers in int8,
        weights and activations (`quantize_int8`; the score head stays fp32), and its forward
        pass compiled, here, for one row and for batches, so that no request waits for it."""
        if int8 and (torch.device(device).type != "cpu" or dtype != torch.float32):
            raise ValueError(f"an int8 judge runs on the CPU from fp32, not {device}/{dtype}")
        directory = resolve_directory(directory)
        config = read_json(directory / "config.json")
        labels = [config.get("id2label", {}).get(str(i)) for i in range(len(OUTPUTS))]
        if labels != list(OUTPUTS) or len(config.get("id2label", {})) != len(OUTPUTS):
            raise CheckpointError(
                f"{directory}/config.json: id2label does not name the judge's {len(OUTPUTS)} "
                "outputs (request_harm, refusal, response_harm, category:…): not a judge"
            )
        model = load_score_model(directory, dtype=dtype, device=device)
        renderer = Renderer(load_tokenizer(directory), config.get("judge_max_seq_len", 1024))
        judge = cls(model, renderer)
        if int8:
            # Eager int8 is slower than bf16 (the quantising is separate kernels); compiled,
            # inductor fuses it into oneDNN's int8 products. Sizes 1 are compiled apart.
            quantize_int8(model.model)
            model.compile(dynamic=True)
            judge.score([{"prompt": "Hello."}])
            judge.score([{"prompt": "Hello."}, {"prompt": "Hello there."}])
        return judge

    @classmethod
    def load_as(cls, directory: str | Path, precision: str, device: str = "cpu") -> Judge:
        """The judge in `directory` in `precision`, one of PRECISIONS ("int8": `load`'s)."""
        if precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise ValueError(f"judge precision {precision!r} is not one of {choices}")
        if precision == "int8":
            return cls.load(directory, device, int8=True)
        return cls.load(directory, device, DTYPES[precision])

    def render(self, item: JudgeInput, where: str) -> list[int]:
        try:
            return self.renderer.ids(item)[0]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e

    @torch.no_grad()
    def score_ids(self, rows: list[list[int]], has_response: list[bool]) -> list[dict[str, Any]]:
        """The judge's probabilities for rendered rows, in one right-padded batch."""
        if not rows:
            return []
        input_ids = torch.full((len(rows), max(map(len, rows))), self.renderer.pad_id)
        for b, ids in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
        logits = self.model(input_ids.to(self.model.score.weight.device)).float().cpu()  # (B, 16)
        binary = torch.sigmoid(logits[:, : len(BINARY)])  # (B, 3)
        category = torch.softmax(logits[:, len(BINARY) :], -1).max(-1)  # (B,), (B,)
        results = []
        for b, response in enumerate(has_response):
            result = {"request_harm": float(binary[b, 0])}
            result["category"] = CATEGORIES[int(category.indices[b])]
            result["category_probability"] = float(category.values[b])
            if response:
                result["refusal"], result["response_harm"] = map(float, binary[b, 1:])
            results.append(result)
        return results

    def score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The probabilities of `rows`, shaped as the module's docstring says (one batch)."""
        items = [(read_input(row, f"rows[{i}]"), f"rows[{i}]") for i, row in enumerate(rows)]
        ids = [self.render(item, where) for item, where in items]
        return self.score_ids(ids, [item.response is not None for item, _ in items])


def score_file(judge: Judge, path: Path, out: Path, batch_size: int = 8) -> int:
    """Each row of JSONL `path` with the judge's scores under `"judge"`, written to `out` batch by
    batch; returns how many. A bad row is an error naming its file and line."""

    def rendered(where: str, data: Any) -> tuple[Any, tuple[list[int], bool]]:
        item = read_input(data, where)
        return data, (judge.render(item, where), item.response is not None)

    def score(items: list[tuple[list[int], bool]]) -> list[dict[str, Any]]:
        ids, has_response = zip(*items)
        return judge.score_ids(list(ids), list(has_response))

    rows = (rendered(where, data) for where, data in jsonl_lines(path))
    return write_scored_jsonl(rows, out, "judge", score, batch_size)
