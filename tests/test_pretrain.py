"""`charter pretrain`: exact resume, interruption, crashes while saving, torchrun DDP/FSDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charter.checkpoint import load_checkpoint
from charter.cli import main
from charter.data.prepare import prepare
from charter.metrics import read_metrics

SETTINGS = [
    "model.preset=micro",
    "data.seq_len=32",
    "data.eval_windows=8",
    "train.batch_size=8",
    "train.micro_batch_size=2",
    "train.warmup_steps=2",
    "train.eval_every=3",
    "train.save_every=3",
    "train.lr=3e-3",
    "train.keep_last=5",
]
CHARTER = [sys.executable, "-m", "charter.cli"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpus, tokenizer_dir):
    root = tmp_path_factory.mktemp("pretrain")
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    prepare(
        [root / "docs.jsonl"],
        tokenizer_dir,
        root / "data",
        val_fraction=0.1,
        seed=0,
        workers=1,
        shard_tokens=20_000,
    )  # several shard files, read across boundaries
    return root / "data"


def pretrain_args(data, out, *settings):
    return ["pretrain", "--data", str(data), "--out", str(out), "--set", *SETTINGS, *settings]


def losses(out) -> list[float]:
    return [row["loss"] for row in read_metrics(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    """Nine steps in one go: the reference the other runs must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "run"
    main(pretrain_args(data, out, "train.steps=9"))
    return out


def test_run_writes_metrics_checkpoints_and_learns(straight_run, capsys):
    rows = read_metrics(straight_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 10))
    fields = ["step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"]
    assert all(list(r) in (fields, [*fields, "val_loss", "val_bpb"]) for r in rows)
    evaluated = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [3, 6, 9]
    assert all(r["val_bpb"] > 0 for r in evaluated)
    # it learns (the corpus is this Python's docstrings, so the exact drop varies by version)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3
    steps = sorted(p.name for p in (straight_run / "checkpoints").iterdir())
    assert steps == ["step-000003", "step-000006", "step-000009"]
    model = load_checkpoint(straight_run / "best")  # a Hugging Face directory
    assert model.config.num_hidden_layers == 2
    assert (
        straight_run / "checkpoints" / "step-000009" / "training_state" / "optimizer.pt"
    ).exists()


def test_resume_is_bitwise_exact(data, straight_run, tmp_path):
    out = tmp_path / "run"
    main(pretrain_args(data, out, "train.steps=9", "train.stop_after=4"))
    assert len(losses(out)) == 4
    main(pretrain_args(data, out, "train.steps=9"))  # resumes from step 4
    assert losses(out) == losses(straight_run)  # loss for loss, bit for bit
    resumed = load_checkpoint(out / "checkpoints" / "step-000009")
    reference = load_checkpoint(straight_run / "checkpoints" / "step-000009")
    for (name, a), (_, b) in zip(resumed.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_keep_last_prunes_old_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    main(pretrain_args(data, out, "train.steps=9", "train.keep_last=1"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000009"]


def test_ctrl_c_saves_the_current_step_before_exiting(data, straight_run, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        CHARTER + pretrain_args(data, out, "train.steps=400", "train.save_every=1000"),
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(losses(out)) >= 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    last_step = read_metrics(metrics)[-1]["step"]
    saved = [p.name for p in (out / "checkpoints").iterdir()]
    assert saved == [f"step-{last_step:06d}"]
    state = json.loads(
        (out / "checkpoints" / saved[0] / "training_state" / "progress.json").read_text()
    )
    assert state["step"] == last_step


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(data, straight_run, tmp_path):
    """Kill -9 the run while it writes its second checkpoint (step 6): the step-3 checkpoint is
    loadable, and resuming from it reproduces the straight run exactly."""
    out = tmp_path / "run"
    marker = tmp_path / "writing"
    script = f"""
import sys, time
from pathlib import Path
import charter.train.loop as loop
real_replace = loop.replace_directory
def slow_replace(tmp, directory):
    if directory.name == "step-000006":
        Path({str(marker)!r}).write_text(str(tmp))
        time.sleep(600)  # killed here: the temporary directory is half done
    real_replace(tmp, directory)
loop.replace_directory = slow_replace
from charter.cli import main
main({pretrain_args(data, out, "train.steps=9")!r})
"""
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the run never reached its second checkpoint"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert left == [".step-000006.tmp-" + str(process.pid), "step-000003"]
    load_checkpoint(out / "checkpoints" / "step-000003")
    main(pretrain_args(data, out, "train.steps=9"))
    assert losses(out) == losses(straight_run)
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert left == ["step-000003", "step-000006", "step-000009"]  # the partial one is gone


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_two_ranks_match_one_process(data, straight_run, tmp_path, parallel):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29500 + os.getpid() % 1000 + (parallel == "fsdp")),
            "-m",
            "charter.cli",
            *pretrain_args(data, out, "train.steps=9", f"train.parallel={parallel}"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_metrics(out / "metrics.jsonl")) == 9  # rank 0 alone writes
    assert losses(out) == pytest.approx(losses(straight_run), abs=1e-5)
    distributed = load_checkpoint(out / "checkpoints" / "step-000009")
    reference = load_checkpoint(straight_run / "checkpoints" / "step-000009")
    for (name, a), (_, b) in zip(distributed.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=name)


def test_a_batch_that_does_not_split_into_micro_batches_is_refused(data, tmp_path):
    with pytest.raises(
        SystemExit, match="batch_size 6 is not a multiple of world_size 1 × micro_batch_size 4"
    ):
        main(
            pretrain_args(data, tmp_path / "run", "train.batch_size=6", "train.micro_batch_size=4")
        )
