"""The constitutional judge: one score model that reads a request (and a reply, when there is one)
and gives, from one forward pass, every label of the judge's data (`charter.data.judge_data`).

    charter judge train --backbone SmolLM2 --data train.jsonl --heldout heldout.jsonl --out RUN

Outputs (`OUTPUTS`, the score head's `num_labels` = 16, named in config.json's `id2label`):

    0  request_harm        logit; BCE with logits
    1  refusal             logit; BCE with logits (rows with a response)
    2  response_harm       logit; BCE with logits (rows with a response)
    3… category:weapons …  13 logits, one per `CATEGORIES` entry; softmax cross-entropy on rows
                           with a category, and "none" for benign rows (request_harm 0)

A preference pair (`{"prompt", "response", "rejected"}`, people preferred `response` as the less
harmful reply) trains `response_harm` too, with the Bradley–Terry loss of reward models:
-log σ(z_rejected - z_preferred) on its two response-harm logits, a fifth head ("preference")
with its own mean. Both replies of a pair are in the same micro-batch.

A label a row lacks contributes nothing. The loop divides the summed loss by the global batch's
rows (`num_targets`), so each head's sum is scaled first by rows / (that head's labels in the
whole global batch): the loss is the sum over heads of each head's mean over its present labels,
whatever the split over ranks and micro-batches.

Inputs are rendered in the backbone's chat format (`chat_format`): a user turn with the request,
and the assistant's turn with the reply; a request alone ends with the open assistant turn (what
the model would answer next). The score is read at the last token (`heads.ScoreModel`), so the
judge pads with a token no rendering ends with (`judge_pad_token_id`; SmolLM2 pads with its
end-of-turn token). A rendering longer than `max_seq_len` loses the middle of its reply first
(its opening says whether it refuses, its end whether it delivered), then the middle of the last
user message, each cut marked "…"; such rows are counted.

Batches are drawn as SFT's are: a seeded order reshuffled every epoch, sorted by length inside a
global batch (length bucketing); batch k is a pure function of (seed, k), so resume is exact.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charter import chat
from charter.chat.format import ChatFormat, chat_format
from charter.checkpoint import load_score_model, load_tokenizer, read_tensors, write_checkpoint
from charter.config import ModelConfig
from charter.data.judge_sources import CATEGORIES, LABELS
from charter.data.sft import jsonl_lines
from charter.files import read_json, write_json
from charter.heads import ScoreModel
from charter.tokenizer import ENDOFTEXT, Tokenizer
from charter.train.batching import freeze_lower_layers, length_bucketed_batch
from charter.train.distributed import gather_dicts, init_distributed
from charter.train.loop import MODEL, Models, TrainConfig, train_and_report
from charter.train.settings import fill

BINARY = LABELS  # request_harm, refusal, response_harm: the first three outputs
OUTPUTS = (*BINARY, *(f"category:{c}" for c in CATEGORIES))
HEADS = (*BINARY, "category", "preference")
NONE = CATEGORIES.index("none")
IGNORE = -100  # category target of a row without one
ELLIPSIS = " … "  # marks where a truncated text lost its middle


@dataclass
class JudgeSettings:
    max_seq_len: int = 1024  # longer renderings lose the middle of a text (and are counted)
    heldout_examples: int = 512  # held-out rows in the validation loss and metrics
    # Train only the blocks above the first `freeze_layers` (and not the embeddings), as SFT.
    freeze_layers: int = 0


# ---- rows ----


@dataclass
class JudgeInput:
    """What the judge reads: a request (a conversation ending with a user turn) and maybe the
    assistant's reply to it."""

    request: chat.Conversation
    response: str | None = None


@dataclass
class JudgeExample:
    ids: list[int]
    binary: list[int | None]  # request_harm, refusal, response_harm (None: absent)
    category: int  # index into CATEGORIES, or IGNORE
    rejected_ids: list[int] | None = None  # a preference pair: `ids` is the preferred reply

    @property
    def length(self) -> int:
        return max(len(self.ids), len(self.rejected_ids or ()))


def read_input(data: Any, where: str) -> JudgeInput:
    """A row `{"prompt", "response"?}`, or a Messages-shaped `{"messages", "system"?}` whose
    last message, if the assistant's, is the reply; errors name `where` (file:line)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    if "messages" in data:
        conversation = chat.conversation_from_dict(data, where)
        messages, response = conversation.messages, None
        if messages[-1].role == "assistant":
            response = _text(messages[-1].content, f"{where}: messages[{len(messages) - 1}]")
            messages = messages[:-1]
        if not messages or messages[-1].role != "user":
            raise ValueError(f"{where}: messages: the request must end with a user message")
        return JudgeInput(chat.Conversation(messages, conversation.system), response)
    prompt, response = data.get("prompt"), data.get("response")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: prompt: expected a non-empty string (or give messages)")
    if response is not None and not isinstance(response, str):
        raise ValueError(f"{where}: response: expected a string")
    return JudgeInput(chat.Conversation([chat.Message("user", [chat.TextBlock(prompt)])]), response)


def _text(content: list[chat.Block], where: str) -> str:
    if any(block.type != "text" for block in content):
        raise ValueError(f"{where}: the judge reads text blocks only")
    return chat.BLOCK_SEPARATOR.join(block.text for block in content)


def read_labels(data: dict[str, Any], where: str, has_response: bool) -> tuple[list, int]:
    """The binary labels (None where absent) and the category target of a training row."""
    binary = []
    for name in BINARY:
        value = data.get(name)
        if value is not None and (value not in (0, 1) or isinstance(value, bool)):
            raise ValueError(f"{where}: {name}: expected 0 or 1, got {value!r}")
        if value is not None and name != "request_harm" and not has_response:
            raise ValueError(f"{where}: {name}: a label of the response, but the row has none")
        binary.append(value)
    category, harm = data.get("category"), binary[0]
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"{where}: category: {category!r} is not one of {', '.join(CATEGORIES)}")
    if category is not None and harm != (category != "none"):
        raise ValueError(f"{where}: category {category!r} disagrees with request_harm {harm}")
    if harm == 0:
        category = "none"
    if harm is None and binary[1] is None and binary[2] is None:
        raise ValueError(f"{where}: no label (request_harm, category, refusal, response_harm)")
    return binary, IGNORE if category is None else CATEGORIES.index(category)


# ---- rendering ----


def judge_pad_token_id(tokenizer: Tokenizer) -> int:
    """The tokenizer's pad token unless a rendering can end with it (an end-of-turn token, as
    SmolLM2's is), else <|endoftext|>: the score is read at the last token that is not padding."""
    for candidate in (tokenizer.pad_token_id, tokenizer.token_id(ENDOFTEXT)):
        if candidate is not None and candidate not in tokenizer.eos_token_ids:
            return candidate
    raise ValueError("the tokenizer has no pad token other than its end-of-turn tokens")


class Renderer:
    """Judge inputs → ids in the backbone's chat format, truncated to `max_seq_len`."""

    def __init__(self, tokenizer: Tokenizer, max_seq_len: int) -> None:
        self.tokenizer, self.max_seq_len = tokenizer, max_seq_len
        self.format: ChatFormat = chat_format(tokenizer)
        self.pad_id = judge_pad_token_id(tokenizer)

    def ids(self, item: JudgeInput) -> tuple[list[int], bool]:
        """The ids of `item`, and whether a text lost its middle to fit."""
        ids = self._render(item)
        truncated, extra = False, 0
        while len(ids) > self.max_seq_len:
            before = len(ids)
            item = self._shorten(item, len(ids) - self.max_seq_len + extra)
            ids, truncated = self._render(item), True
            # Ids cut inside a multi-byte character decode to a replacement character, which
            # encodes to more tokens than were cut: cut more each time a cut did not shorten
            # the rendering, so this ends.
            if len(ids) >= before:
                extra = 2 * extra + 1
        return ids, truncated

    def _render(self, item: JudgeInput) -> list[int]:
        if item.response is None:
            return self.format.prompt(item.request, thinking=False)
        reply = [chat.TextBlock(item.response)]
        return self.format.scored(item.request, reply, thinking=False).ids

    def _shorten(self, item: JudgeInput, overflow: int) -> JudgeInput:
        """`item` without its oldest exchange (user message and reply) while it has earlier
        ones, one at a time (`ids` calls it again until the rendering fits); then with
        `overflow` tokens (and the marker's) cut from the middle of its reply, then of its last
        user message."""
        *earlier, last = item.request.messages
        if earlier:
            later = earlier[2:] if earlier[0].role == "user" else earlier[1:]
            return JudgeInput(chat.Conversation([*later, last], item.request.system), item.response)
        if item.response is not None:
            response, overflow = self._cut_middle(item.response, overflow)
            item = JudgeInput(item.request, response)
        if overflow <= 0:
            return item
        text, overflow = self._cut_middle(_text(last.content, "request"), overflow)
        if overflow > 0:
            raise ValueError(
                f"the conversation does not fit in max_seq_len {self.max_seq_len} tokens "
                "even with the earlier turns, the reply and the last user message cut"
            )
        last = chat.Message("user", [chat.TextBlock(text)])
        return JudgeInput(chat.Conversation([last], item.request.system), item.response)

    def _cut_middle(self, text: str, overflow: int) -> tuple[str, int]:
        """`text` less `overflow` + the marker's tokens from its middle (as many as it has), and
        what is left of the overflow."""
        ids = self.tokenizer.encode(text, special_tokens=False)
        cut = min(len(ids), overflow + len(self.tokenizer.encode(ELLIPSIS)))
        if cut >= len(ids):
            return "", overflow - len(ids)
        head = (len(ids) - cut + 1) // 2
        tail = len(ids) - cut - head
        kept = (
            self.tokenizer.decode(ids[:head])
            + ELLIPSIS
            + self.tokenizer.decode(ids[-tail:] if tail else [])
        )
        return kept, 0


def read_examples(path: str | Path, renderer: Renderer) -> tuple[list[JudgeExample], int]:
    """The labelled rows of a judge JSONL file, rendered; and how many were truncated."""
    examples, truncated = [], 0
    for where, data in jsonl_lines(path):
        item = read_input(data, where)
        rejected = data.get("rejected")
        if rejected is None:  # read_labels names `where` in its own errors
            binary, category = read_labels(data, where, item.response is not None)
        try:
            ids, cut = renderer.ids(item)
            if rejected is None:
                examples.append(JudgeExample(ids, binary, category))
            else:
                if not isinstance(rejected, str) or item.response is None:
                    raise ValueError("a preference pair needs a response and a rejected string")
                if any(data.get(name) is not None for name in (*BINARY, "category")):
                    raise ValueError("a preference pair carries no other label")
                rejected_ids, cut_rejected = renderer.ids(JudgeInput(item.request, rejected))
                examples.append(JudgeExample(ids, [None] * 3, IGNORE, rejected_ids))
                cut = cut or cut_rejected
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        truncated += cut
    return examples, truncated


# ---- batches and the loss ----


@dataclass
class JudgeBatch:
    input_ids: Tensor  # (B + P, T), right-padded: B examples, then the P pairs' rejected replies
    binary: Tensor  # (B, 3) float targets (0 where absent)
    present: Tensor  # (B, 3) bool: which binary labels the row has
    category: Tensor  # (B,) index into CATEGORIES, or IGNORE
    pairs: Tensor  # (P, 2) rows of input_ids: the preferred reply, the rejected one
    head_scale: Tensor  # (5,) examples / labels of each head in the global batch (0: none)
    heldout_rows: Tensor | None = None  # (B,) held-out row indices, for the metrics

    @property
    def num_targets(self) -> int:
        return self.binary.shape[0]

    def to(self, device: torch.device) -> JudgeBatch:
        return JudgeBatch(
            self.input_ids.to(device),
            self.binary.to(device),
            self.present.to(device),
            self.category.to(device),
            self.pairs.to(device),
            self.head_scale.to(device),
            self.heldout_rows,  # stays on the CPU: only the metrics read it
        )


def head_scale(examples: list[JudgeExample]) -> Tensor:
    """examples / labels per head of a global batch, 0 for a head without labels: (5,)."""
    counts = [sum(e.binary[h] is not None for e in examples) for h in range(len(BINARY))]
    counts.append(sum(e.category != IGNORE for e in examples))
    counts.append(sum(e.rejected_ids is not None for e in examples))
    return torch.tensor([len(examples) / c if c else 0.0 for c in counts])


def collate(
    examples: list[JudgeExample], pad_id: int, scale: Tensor, rows: list[int] | None = None
) -> JudgeBatch:
    sequences = [e.ids for e in examples]
    pairs = []
    for row, e in enumerate(examples):
        if e.rejected_ids is not None:
            pairs.append((row, len(sequences)))
            sequences.append(e.rejected_ids)
    input_ids = torch.full((len(sequences), max(map(len, sequences))), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
    present = torch.tensor([[v is not None for v in e.binary] for e in examples])
    binary = torch.tensor([[float(v or 0) for v in e.binary] for e in examples])
    category = torch.tensor([e.category for e in examples])
    pair_rows = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    held = None if rows is None else torch.tensor(rows)
    return JudgeBatch(input_ids, binary, present, category, pair_rows, scale, held)


RESPONSE_HARM = BINARY.index("response_harm")


def pair_margins(logits: Tensor, pairs: Tensor) -> Tensor:
    """z_rejected - z_preferred of the response-harm logit, per pair: (P,). Positive: the
    judge finds the rejected reply the more harmful, as people did."""
    return logits[pairs[:, 1], RESPONSE_HARM] - logits[pairs[:, 0], RESPONSE_HARM]


def judge_loss(logits: Tensor, batch: JudgeBatch) -> Tensor:
    """Each head's loss summed over the rows that have its label, scaled by `head_scale`."""
    logits = logits.float()  # (B + P, 16)
    nb, rows = len(BINARY), batch.num_targets
    bce = F.binary_cross_entropy_with_logits(logits[:rows, :nb], batch.binary, reduction="none")
    binary = (bce * batch.present).sum(0)  # (3,): a missing label adds 0 and no gradient
    category = F.cross_entropy(
        logits[:rows, nb:], batch.category, ignore_index=IGNORE, reduction="sum"
    )
    preference = -F.logsigmoid(pair_margins(logits, batch.pairs)).sum()
    return (torch.cat([binary, category[None], preference[None]]) * batch.head_scale).sum()


# ---- the held-out metrics ----


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The area under the ROC curve: the chance a random positive outscores a random negative
    (ties count half), from the positives' average ranks (Mann–Whitney U). None without both."""
    positives, negatives = int(labels.sum()), int((1 - labels).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # tied scores share their average rank
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[labels == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def head_metrics(logits: np.ndarray, examples: list[JudgeExample]) -> dict[str, float]:
    """Accuracy (and AUC where both classes occur) of each head over `examples`, (N, 16) logits."""
    metrics: dict[str, float] = {}
    for h, name in enumerate(BINARY):
        rows = [i for i, e in enumerate(examples) if e.binary[h] is not None]
        if not rows:
            continue
        labels = np.array([examples[i].binary[h] for i in rows])
        scores = logits[rows, h]
        metrics[f"{name}/accuracy"] = float(((scores > 0) == labels).mean())
        auc = roc_auc(scores, labels)
        if auc is not None:
            metrics[f"{name}/auc"] = auc
    rows = [i for i, e in enumerate(examples) if e.category != IGNORE]
    if rows:
        predicted = logits[rows, len(BINARY) :].argmax(-1)
        metrics["category/accuracy"] = float(
            (predicted == np.array([examples[i].category for i in rows])).mean()
        )
    return metrics


def pair_agreement(margins: list[float]) -> float:
    """The share of pairs whose rejected reply the judge finds the more harmful (ties half)."""
    return float(np.mean([1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]))


def spread(items: list, n: int) -> list:
    """`n` of `items` evenly spaced from first to last (all of them if there are fewer): a
    held-out subset that samples every source of a file written source by source."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


# ---- the task ----


class JudgeTask:
    """The Trainer's task for one `ScoreModel` (named `MODEL`) with the judge's outputs."""

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: Tokenizer,
        examples: list[JudgeExample],
        heldout: list[JudgeExample],
        settings: JudgeSettings,
        seed: int,
    ) -> None:
        self.config, self.tokenizer = config, tokenizer
        self.examples, self.settings, self.seed = examples, settings, seed
        self.heldout = spread(heldout, settings.heldout_examples)
        self.pad_id = config.pad_token_id
        # Filled by the eval batches' losses: each held-out row's logits, each pair's margin.
        self._heldout_logits: dict[int, np.ndarray] = {}
        self._heldout_margins: dict[int, float] = {}

    def global_batch(self, step: int, batch_size: int) -> list[int]:
        """Indices of the rows of batch `step`, shortest first."""
        lengths = [e.length for e in self.examples]
        return length_bucketed_batch(lengths, self.seed, step, batch_size, "rows")

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models=None):
        chosen = self.global_batch(step, batch_size)
        scale = head_scale([self.examples[i] for i in chosen])
        per_rank = batch_size // world_size
        mine = chosen[rank * per_rank : (rank + 1) * per_rank]
        return [
            collate([self.examples[i] for i in mine[j : j + micro_batch_size]], self.pad_id, scale)
            for j in range(0, per_rank, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        self._heldout_logits, self._heldout_margins = {}, {}
        scale = head_scale(self.heldout)
        rows = sorted(
            range(rank, len(self.heldout), world_size), key=lambda i: self.heldout[i].length
        )
        return [
            collate([self.heldout[i] for i in chunk], self.pad_id, scale, chunk)
            for chunk in (
                rows[j : j + micro_batch_size] for j in range(0, len(rows), micro_batch_size)
            )
        ]

    def loss(self, models: Models, batch: JudgeBatch) -> Tensor:
        logits = models[MODEL](batch.input_ids)  # (B + P, 16)
        if batch.heldout_rows is not None:
            held = logits.detach().float().cpu()
            rows = batch.heldout_rows.tolist()
            self._heldout_logits.update(zip(rows, held[: len(rows)].numpy()))
            margins = pair_margins(held, batch.pairs.cpu()).tolist()
            self._heldout_margins.update(
                zip((rows[i] for i in batch.pairs[:, 0].tolist()), margins)
            )
        return judge_loss(logits, batch)

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        # every rank scored its share
        logits, margins = gather_dicts(self._heldout_logits, self._heldout_margins)
        rows = sorted(logits)
        metrics = head_metrics(np.stack([logits[i] for i in rows]), [self.heldout[i] for i in rows])
        if margins:
            metrics["preference/agreement"] = pair_agreement(list(margins.values()))
        return {f"heldout/{name}": value for name, value in metrics.items()}

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        write_checkpoint(directory, self.config, state_dict, self.tokenizer)
        name_outputs(directory, self.settings.max_seq_len)

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        return read_tensors(directory)


def name_outputs(directory: Path, max_seq_len: int) -> None:
    """config.json's `id2label`/`label2id` name the judge's outputs (transformers reads them);
    `judge_max_seq_len` is the length the judge was trained to read."""
    path = directory / "config.json"
    config = read_json(path)
    config["id2label"] = {str(i): name for i, name in enumerate(OUTPUTS)}
    config["label2id"] = {name: i for i, name in enumerate(OUTPUTS)}
    config["judge_max_seq_len"] = max_seq_len
    write_json(path, config)


def judge_model(backbone: Path, tokenizer: Tokenizer, seed: int) -> ScoreModel:
    """The backbone (a causal LM, or a judge to train on) with the judge's score head."""
    model = load_score_model(backbone, num_labels=len(OUTPUTS), seed=seed)
    model.config.pad_token_id = judge_pad_token_id(tokenizer)
    return model


def train_judge(
    backbone: Path, data: Path, heldout: Path | None, out: Path, settings: dict
) -> None:
    """Train a judge from checkpoint `backbone` on the judge JSONL `data` into run directory
    `out`, with `settings` sections [train] and [judge]; `heldout` gives the validation loss and
    the per-head accuracy and AUC."""
    unknown = set(settings) - {"train", "judge"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    train_config = fill(TrainConfig, {**JUDGE_DEFAULTS, **settings.get("train", {})}, "train")
    judge_settings = fill(JudgeSettings, settings.get("judge", {}), "judge")

    tokenizer = load_tokenizer(backbone)
    renderer = Renderer(tokenizer, judge_settings.max_seq_len)
    tokenizer.config["pad_token"] = tokenizer.decode([renderer.pad_id])  # as config.json says
    examples, truncated = read_examples(data, renderer)
    heldout_examples = read_examples(heldout, renderer)[0] if heldout else []
    if not examples:
        raise ValueError(f"{data}: no rows")
    ctx = init_distributed()
    torch.manual_seed(train_config.seed)
    model = judge_model(backbone, tokenizer, train_config.seed)
    freeze_lower_layers(model.model, judge_settings.freeze_layers, "judge")
    task = JudgeTask(
        model.config, tokenizer, examples, heldout_examples, judge_settings, train_config.seed
    )
    if ctx.is_main:
        print(
            f"{len(examples)} rows ({truncated} truncated to {judge_settings.max_seq_len} tokens), "
            f"{len(task.heldout)} held out; {renderer.format.name} chat format; "
            f"{train_config.steps * train_config.batch_size / len(examples):.2f} epochs; "
            f"settings {json.dumps(asdict(train_config))}",
            file=sys.stderr,
        )
    train_and_report(model, task, train_config, out, ctx)


# A new head on a trained trunk: a moderate learning rate, a short warmup.
JUDGE_DEFAULTS = {
    "lr": 1e-4,
    "warmup_steps": 10,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.0,
    "batch_size": 16,
    "micro_batch_size": 4,
    "eval_every": 100,
    "save_every": 100,
}
