"""The whole pipeline as one resumable recipe: `charter demo`.

    corpora (package registries) → tokenizer → token shards → pretrain (demo tier)
        → SFT on synthetic demonstrations → held-out evaluation → samples

Each stage is one `charter` command and writes one artifact; a stage whose artifact exists is
skipped, and the training stages resume from their last checkpoint, so an interrupted demo
continues where it stopped. Every artifact can be opened, inspected and reused by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from charter.commands import main
from charter.log import log

CONFIGS = Path(__file__).parent / "configs"
CORPUS_MIX = ["python-docs", "brown", "wordnet", "austen"]
SAMPLE_PROMPTS = ["What is 17 + 25?", "Define the word 'river'.", "Name three colours."]


@dataclass
class Stage:
    name: str
    artifact: Path  # exists ⇔ the stage is done
    command: list[str]


def demo_stages(work: Path, cache: Path, sft_examples: int) -> list[Stage]:
    corpora = [cache / "corpora" / f"{name}.jsonl" for name in CORPUS_MIX]
    tokenizer, data = work / "tokenizer", work / "data"
    pretrained, tuned = work / "pretrain" / "final", work / "sft" / "final"
    sft_train, sft_heldout = work / "sft-train.jsonl", work / "sft-heldout.jsonl"
    stages = [
        Stage(f"fetch {name}", path, ["data", "fetch", name, "--cache", str(cache)])
        for name, path in zip(CORPUS_MIX, corpora)
    ]
    return stages + [
        Stage(
            "tokenizer",
            tokenizer / "tokenizer.json",
            [
                "tokenizer",
                "train",
                "--input",
                *map(str, corpora),
                "--vocab-size",
                "8192",
                "--out",
                str(tokenizer),
            ],
        ),
        Stage(
            "token shards",
            data / "manifest.json",
            [
                "data",
                "prepare",
                *map(str, corpora),
                "--tokenizer",
                str(tokenizer),
                "--out",
                str(data),
            ],
        ),
        Stage(
            "pretrain",
            pretrained,
            [
                "pretrain",
                "--config",
                str(CONFIGS / "demo.toml"),
                "--data",
                str(data),
                "--out",
                str(work / "pretrain"),
            ],
        ),
        Stage(
            "SFT demonstrations",
            sft_train,
            [
                "data",
                "sft-synth",
                "--split",
                "train",
                "--n",
                str(sft_examples),
                "--wordnet",
                str(corpora[CORPUS_MIX.index("wordnet")]),
                "--out",
                str(sft_train),
            ],
        ),
        Stage(
            "held-out tasks",
            sft_heldout,
            [
                "data",
                "sft-synth",
                "--split",
                "heldout",
                "--n",
                "160",
                "--wordnet",
                str(corpora[CORPUS_MIX.index("wordnet")]),
                "--out",
                str(sft_heldout),
            ],
        ),
        Stage(
            "SFT",
            tuned,
            [
                "sft",
                "--base",
                str(pretrained),
                "--data",
                str(sft_train),
                "--heldout",
                str(sft_heldout),
                "--config",
                str(CONFIGS / "demo-sft.toml"),
                "--out",
                str(work / "sft"),
            ],
        ),
        Stage(
            "evaluation",
            work / "eval-sft.json",
            [
                "eval",
                "sft",
                "--model",
                str(tuned),
                "--data",
                str(sft_heldout),
                "--out",
                str(work / "eval-sft.json"),
            ],
        ),
    ]


def run_stages(stages: list[Stage]) -> None:
    for number, stage in enumerate(stages, start=1):
        header = f"[{number}/{len(stages)}] {stage.name}"
        if stage.artifact.exists():
            log(f"{header}: done ({stage.artifact})")
            continue
        log(f"{header}: charter {' '.join(stage.command)}")
        started = time.perf_counter()
        main(stage.command)
        log(f"{header}: finished in {time.perf_counter() - started:,.0f} s")
