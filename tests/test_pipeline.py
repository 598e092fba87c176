"""`charter demo`: every stage is a valid command; done stages are skipped; order matters."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import pipeline
from charter.commands import build_parser
from charter.pipeline import CONFIGS, Stage, demo_stages, run_stages
from charter.train.loop import TrainConfig
from charter.train.settings import fill, load_settings


def test_every_demo_stage_is_a_valid_charter_command(tmp_path):
    parser = build_parser()
    stages = demo_stages(tmp_path / "work", tmp_path / "cache", sft_examples=100)
    for stage in stages:
        args = parser.parse_args(stage.command)
        assert callable(args.func), stage.name
    names = [s.name for s in stages]
    assert names.index("tokenizer") < names.index("token shards") < names.index("pretrain")
    assert names.index("pretrain") < names.index("SFT") < names.index("evaluation")


@pytest.mark.parametrize("name", ["demo.toml", "demo-sft.toml", "smollm2-sft.toml"])
def test_shipped_configs_are_valid(name):
    from charter.train.pretrain import DataSettings, ModelSettings
    from charter.train.sft import SFTSettings

    sections = {
        "train": TrainConfig,
        "model": ModelSettings,
        "data": DataSettings,
        "sft": SFTSettings,
    }
    settings = load_settings(CONFIGS / name, [])
    assert set(settings) <= set(sections) and "train" in settings
    for section, values in settings.items():
        fill(sections[section], values, section)  # unknown keys and wrong types raise


def test_done_stages_are_skipped_and_the_rest_run_in_order(tmp_path, monkeypatch):
    ran: list[list[str]] = []
    monkeypatch.setattr(pipeline, "main", lambda command: ran.append(command))
    done = tmp_path / "done"
    done.write_text("")
    stages = [
        Stage("a", done, ["a"]),
        Stage("b", tmp_path / "b", ["b"]),
        Stage("c", tmp_path / "c", ["c"]),
    ]
    run_stages(stages)
    assert ran == [["b"], ["c"]]


def test_a_failing_stage_stops_the_pipeline(tmp_path, monkeypatch):
    def fail(command):
        raise SystemExit(f"charter {command[0]}: error: boom")

    monkeypatch.setattr(pipeline, "main", fail)
    with pytest.raises(SystemExit, match="boom"):
        run_stages([Stage("a", Path(tmp_path / "a"), ["a"]), Stage("b", tmp_path / "b", ["b"])])
