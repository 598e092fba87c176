"""`charter pipeline`: presets load and every stage is a valid command; placeholders; done
stages skipped (their finish recorded); a changed command, a failing stage, a stage that may
fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from charter.commands import build_parser
from charter.pipeline import (
    CONFIGS,
    PRESETS,
    Stage,
    load_pipeline,
    preset_path,
    read_record,
    run_stages,
)
from charter.train.loop import TrainConfig
from charter.train.settings import fill, load_settings


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_stage_is_a_valid_charter_command(name, tmp_path):
    parser = build_parser()
    pipeline = load_pipeline(preset_path(name), tmp_path / "run")
    for stage in pipeline.stages:
        args = parser.parse_args(stage.command)
        assert callable(args.func), stage.name
        assert not [arg for arg in stage.command if re.search(r"\{[a-z_]+\}", arg)], stage.name
    names = [s.name for s in pipeline.stages]
    order = [("SL-CAI", "RL-CAI labels"), ("reward model", "PPO"), ("PPO", "red-team rounds"),
             ("red-team rounds", "release gate")]  # fmt: skip
    for earlier, later in order:
        assert names.index(earlier) < names.index(later), (earlier, later)
    assert pipeline.report["gate"].startswith(str(tmp_path / "run")) or name == "smollm2"


@pytest.mark.parametrize(
    "name",
    ["demo.toml", "demo-sft.toml", "smollm2-sft.toml", "micro-pretrain.toml", "micro-sft.toml"],
)
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


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_placeholders_are_filled_and_list_variables_become_arguments(tmp_path):
    spec = write(tmp_path / "p.toml", """
[vars]
data = "{out}/data"
flags = ["--a", "{out}/x"]
[[stage]]
name = "one"
done = "{data}/done"
run = ["cmd", "{flags}", "--config", "{configs}/demo.toml", "at-{data}"]
[report]
gate = "{out}/gate.json"
""")  # fmt: skip
    pipeline = load_pipeline(spec, Path("/r"), {"data": "/elsewhere"})
    (stage,) = pipeline.stages
    assert stage.artifact == Path("/elsewhere/done")
    assert stage.command == ["cmd", "--a", "/r/x", "--config", f"{CONFIGS}/demo.toml",
                             "at-/elsewhere"]  # fmt: skip
    assert pipeline.report == {"gate": "/r/gate.json"}


@pytest.mark.parametrize(
    "body, overrides, error",
    [
        ('[[stage]]\nname="a"\ndone="{nope}"\nrun=[]', {}, r"stage 1 \(a\): placeholder \{nope\}"),
        ('[[stage]]\nname="a"\ndone="x"\nrun=[]\nwhen="later"', {}, r"unknown fields \['when'\]"),
        ('[[stage]]\nname="a"\nrun=[]', {}, r"missing \['done'\]"),
        ('[vars]\nx=["1"]\n[[stage]]\nname="a"\ndone="-{x}-"\nrun=[]', {}, "is a list"),
        ('[[stage]]\nname="a"\ndone="x"\nrun=[]', {"y": "1"}, "no variable 'y' to set"),
        ('[[stage]]\nname="a"\ndone="x"\nrun=[]\n[[stage]]\nname="a"\ndone="y"\nrun=[]', {},
         "stage names repeat"),
        ('[stages]\n', {}, r"unknown sections \['stages'\]"),
    ],
)  # fmt: skip
def test_a_bad_pipeline_names_its_file_and_stage(tmp_path, body, overrides, error):
    spec = write(tmp_path / "bad.toml", body)
    with pytest.raises(ValueError, match=error) as raised:
        load_pipeline(spec, tmp_path, overrides)
    assert "bad.toml" in str(raised.value)


def test_an_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown preset 'huge': choose micro, demo, smollm2"):
        preset_path("huge")


@pytest.fixture
def ran(monkeypatch):
    """The commands run_stages runs, each making its stage's artifact."""
    commands: list[list[str]] = []

    def main(command):
        commands.append(command)
        Path(command[1]).write_text("")

    monkeypatch.setattr("charter.commands.main", main)
    return commands


def test_done_stages_are_skipped_and_the_rest_run_in_order(tmp_path, ran):
    record = tmp_path / "pipeline.jsonl"
    stages = [Stage(n, tmp_path / n, [n, str(tmp_path / n)]) for n in "abc"]
    (tmp_path / "a").write_text("")  # made, but its finish never recorded (killed before)
    run_stages(stages, record)
    assert [c[0] for c in ran] == ["a", "b", "c"]
    assert [row["stage"] for row in read_record(tmp_path)] == ["a", "b", "c"]
    run_stages(stages, record)
    assert len(ran) == 3  # all done: nothing runs again
    (tmp_path / "b").unlink()
    run_stages(stages, record)
    assert [c[0] for c in ran[3:]] == ["b"]


def test_a_reused_artifact_made_elsewhere_is_done(tmp_path, ran):
    (tmp_path / "judge").write_text("")  # trained by another run
    stages = [Stage(n, tmp_path / n, [n, str(tmp_path / n)], reuse=True) for n in ("judge", "x")]
    run_stages(stages, tmp_path / "pipeline.jsonl")
    assert [c[0] for c in ran] == ["x"]


def test_a_done_stage_whose_command_changed_is_refused(tmp_path, ran):
    record = tmp_path / "pipeline.jsonl"
    run_stages([Stage("a", tmp_path / "a", ["a", str(tmp_path / "a")])], record)
    with pytest.raises(ValueError, match="stage 'a' finished with another command"):
        run_stages([Stage("a", tmp_path / "a", ["a", str(tmp_path / "a"), "--more"])], record)


def test_a_failing_stage_stops_the_pipeline_unless_it_may_fail(tmp_path, monkeypatch):
    def fail(command):
        Path(command[1]).write_text("")
        raise SystemExit(f"charter {command[0]}: error: boom")

    monkeypatch.setattr("charter.commands.main", fail)
    record = tmp_path / "pipeline.jsonl"
    gate = Stage("gate", tmp_path / "gate", ["gate", str(tmp_path / "gate")], may_fail=True)
    run_stages([gate], record)  # the verdict is a result: recorded as finished
    assert [row["stage"] for row in read_record(tmp_path)] == ["gate"]
    later = Stage("later", tmp_path / "later", ["later", str(tmp_path / "later")])
    with pytest.raises(SystemExit, match="pipeline stage 'train' failed: charter train: error"):
        run_stages([Stage("train", tmp_path / "t", ["train", str(tmp_path / "t")]), later], record)
    assert not (tmp_path / "later").exists()
