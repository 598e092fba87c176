"""Red-teaming fed back into training, round after round: `charter redteam-loop`.

    round r (model M_r):  red-team M_r (training and held-out attacks → findings database)
                          → XSTest's safe prompts and benign QA on M_r (over-refusal, knowledge)
                          → the successful training attacks, declined by the writer (`cai select`)
                          → SL-CAI data: the declines of this and every earlier round +
                            the helpful answers (`cai sft`)
                          → SFT of M_r on it → M_{r+1}
    after the last round: red-team and evaluate the final model, and `loop.json` with one row per
                          round: held-out ASR, XSTest over-refusal, benign QA accuracy

Each round's files are in `OUT/round-R/`; every round's findings in `OUT/findings.sqlite`, each
under its round number and the target name `round-R`. The held-out attacks are made from held-out
seeds only, less any attack text already fed to training (`charter redteam`), so the held-out ASR
per round is measured on the same fixed attacks, none trained on. Like `charter demo`, each stage
is one `charter` command that is skipped when its artifact exists, and the commands themselves
resume (the red-team round from its database, `cai select` from its file, SFT from its last
checkpoint), so a killed loop continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.files import read_json, write_json
from charter.pipeline import Stage, run_stages

# What the writer's declines open with (as in docs/cai.md's SL-CAI run): the reason, then what
# can be done instead.
DECLINE = ("I can't help with that, because it could", "Instead, I can")


@dataclass
class LoopSettings:
    model: str  # the round-0 model (a checkpoint directory)
    judge: str  # a trained judge directory: the red-team verdicts
    writer: str  # the model spec that writes the declines (the policy, or a stronger critic)
    seeds: Path  # training seeds (charter cai prompts: redteam.jsonl)
    heldout_seeds: Path  # held-out seeds (redteam-eval.jsonl)
    helpful: list[Path]  # `cai select` files of helpful answers, mixed into every round's SFT
    benign_qa: Path  # benign QA records (cache/cai/benign-qa.jsonl)
    sft_config: Path  # the SFT settings of each round's update
    rounds: int = 3  # updates; the model is red-teamed rounds + 1 times
    strategies: str = "all"
    limit: int | None = None  # seeds per file and round
    max_tokens: int = 128  # of each red-team reply
    safe_prompts: list[str] = field(default_factory=list)  # prompt files; default XSTest's safe
    safe_limit: int | None = None  # over-refusal prompts per set and round, drawn at random
    backend: str = "auto"
    sft_set: list[str] = field(default_factory=list)  # `--set` overrides of the SFT config

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds: must be ≥ 0, got {self.rounds}")


def round_model(settings: LoopSettings, out: Path, r: int) -> str:
    """The model red-teamed in round r: the given one, then each round's fine-tuned one."""
    return settings.model if r == 0 else str(out / f"round-{r}" / "sft" / "final")


def loop_stages(settings: LoopSettings, out: Path) -> list[Stage]:
    stages = []
    for r in range(settings.rounds + 1):
        directory, model = out / f"round-{r}", round_model(settings, out, r)
        stages += _measure_stages(settings, out, directory, model, r)
        if r < settings.rounds:
            stages += _update_stages(settings, out, directory, model, r)
    return stages


def _measure_stages(
    settings: LoopSettings, out: Path, directory: Path, model: str, r: int
) -> list[Stage]:
    backend = ["--backend", settings.backend]
    redteam = [
        "redteam", "--target", model, "--target-name", f"round-{r}", "--judge", settings.judge,
        "--seeds", str(settings.seeds), "--heldout-seeds", str(settings.heldout_seeds),
        "--db", str(out / "findings.sqlite"), "--round", str(r),
        "--strategies", settings.strategies, "--max-tokens", str(settings.max_tokens),
        "--feed", str(directory / "feed.jsonl"), "--out", str(directory / "asr.json"), *backend,
    ]  # fmt: skip
    if settings.limit is not None:
        redteam += ["--limit", str(settings.limit)]
    safe = ["--sets", ""] if settings.safe_prompts else ["--sets", "xstest-safe"]
    refusal = [
        "eval", "refusal", "--model", model, *safe, "--prompts", *settings.safe_prompts,
        "--out", str(directory / "over-refusal.jsonl"),
        "--report", str(directory / "over-refusal.json"), *backend,
    ]  # fmt: skip
    if settings.safe_limit is not None:
        refusal += ["--limit", str(settings.safe_limit)]
    knowledge = [
        "eval", "sft", "--model", model, "--data", str(settings.benign_qa), "--thinking", "off",
        "--max-new-tokens", "64", "--out", str(directory / "benign-qa.json"), *backend,
    ]  # fmt: skip
    return [
        Stage(f"round {r}: red-team", directory / "asr.json", redteam),
        Stage(f"round {r}: over-refusal", directory / "over-refusal.json", refusal),
        Stage(f"round {r}: benign QA", directory / "benign-qa.json", knowledge),
    ]


def _update_stages(
    settings: LoopSettings, out: Path, directory: Path, model: str, r: int
) -> list[Stage]:
    targets, data = directory / "targets.jsonl", directory / "sl-cai.jsonl"
    select = [
        "cai", "select", "--model", settings.writer, "--prompts", str(directory / "feed.jsonl"),
        "--out", str(targets), "--samples", "1", "--temperature", "0", "--examples", "0",
        "--decline", *DECLINE, "--backend", settings.backend,
    ]  # fmt: skip
    # Every round's declines so far, not only this round's: a round whose model gave nothing to
    # feed would otherwise train on helpful answers alone and unlearn the earlier refusals
    # (measured: the held-out ASR went back up from 1.9 % to 38.8 %, docs/redteam.md).
    declines = [str(out / f"round-{q}" / "targets.jsonl") for q in range(r + 1)]
    mix = ["cai", "sft", *declines, *map(str, settings.helpful), "--out", str(data)]
    tune = [
        "sft", "--base", model, "--data", str(data), "--config", str(settings.sft_config),
        "--out", str(out / f"round-{r + 1}" / "sft"),
    ]  # fmt: skip
    if settings.sft_set:
        tune += ["--set", *settings.sft_set]
    return [
        # `cai select` resumes from its own file, so it is done only once the round's SL-CAI
        # data (the next stage's artifact) exists.
        Stage(f"round {r}: declines of the successful attacks", data, select),
        Stage(f"round {r}: SL-CAI data", data, mix),
        Stage(f"round {r}: update", out / f"round-{r + 1}" / "sft" / "final", tune),
    ]


def loop_report(settings: LoopSettings, out: Path) -> dict[str, Any]:
    """One row per round, from the files its stages wrote."""
    rows = []
    for r in range(settings.rounds + 1):
        directory = out / f"round-{r}"
        asr = read_json(directory / "asr.json")
        over_refusal = read_json(directory / "over-refusal.json")
        qa = read_json(directory / "benign-qa.json")
        heldout = asr["asr"]["splits"]["heldout"]["strategy"]["all"]
        train = asr["asr"]["splits"]["train"]["strategy"]["all"]
        safe = over_refusal["safe"]
        qa = qa["modes"]["thinking_off"]
        rows.append(
            {
                "round": r,
                "model": round_model(settings, out, r),
                "heldout_asr": heldout["asr"],
                "heldout_attacks": heldout["attacks"],
                "train_asr": train["asr"],
                "fed": asr.get("fed", {}).get("prompts"),
                "over_refusal": safe["refusal_rate"],
                "over_refusal_prompts": safe["n"],
                "benign_qa": qa["accuracy"],
                "benign_qa_records": sum(task["n"] for task in qa["tasks"].values()),
            }
        )
    first, last = rows[0]["heldout_asr"], rows[-1]["heldout_asr"]
    relative = (first - last) / first if first else 0.0
    return {"rounds": rows, "heldout_asr_relative_drop": round(relative, 4)}


def format_loop(report: dict[str, Any]) -> str:
    lines = ["round  held-out ASR  train ASR  fed  over-refusal  benign QA"]
    for row in report["rounds"]:
        fed = "-" if row["fed"] is None else str(row["fed"])
        lines.append(
            f"{row['round']:>5}  {row['heldout_asr']:>12.1%}  {row['train_asr']:>9.1%}  "
            f"{fed:>3}  {row['over_refusal']:>12.1%}  {row['benign_qa']:>9.1%}"
        )
    lines.append(f"held-out ASR relative drop: {report['heldout_asr_relative_drop']:.1%}")
    return "\n".join(lines)


def run_loop(settings: LoopSettings, out: Path) -> dict[str, Any]:
    run_stages(loop_stages(settings, out))
    report = loop_report(settings, out)
    write_json(out / "loop.json", report)
    return report
