"""The whole system as one resumable recipe: `charter pipeline --preset NAME --out runs/NAME`.

A pipeline is a TOML file (the presets are `charter/configs/pipeline-*.toml`; a user's own file
replaces them with `--config`):

    [vars]                     # names the commands use as {name}; {out} is the run directory
    cache = "cache"

    [[stage]]
    name = "pretrain"
    done = "{out}/pretrain/final"            # exists ⇔ the stage made its artifact
    run = ["pretrain", "--data", "{out}/data", "--out", "{out}/pretrain", "--set", "…"]
    seconds = 90                             # expected on 2 cores: the pipeline's ETA
    may_fail = false                         # true: a non-zero exit is a result (the gate's)
    reuse = false                            # true: an artifact made elsewhere counts as done

    [report]                                 # what `charter.report` draws (its docstring)

Each stage is one `charter` command run in this process, so a kill stops everything at once.
A stage is done when its finish is recorded in `RUN/pipeline.jsonl` (with the command and its
seconds) and its artifact exists; a done stage is skipped, and any other stage is run again:
the training commands resume from their last checkpoint, the generation commands skip the
items already in their JSONL or database, and the quick ones write their files anew. So an
interrupted pipeline, rerun, continues where it stopped. A done stage whose command has since
changed is an error: its artifact was made by the old one. A `reuse` stage is done as soon as
its artifact exists, made by this run or another (a safety judge trained once, in its own run
directory, and shared): its artifact must appear only when complete, as a `final` checkpoint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.files import ResumableJsonl, read_json, read_toml, write_json
from charter.log import log

CONFIGS = Path(__file__).parent / "configs"
PRESETS = ("micro", "demo", "smollm2")
RECORD_FILE = "pipeline.jsonl"  # one row per finished stage: the state and the metrics
PLAN_FILE = "pipeline.json"  # the resolved pipeline, for `charter report RUN`
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass
class Stage:
    name: str
    artifact: Path  # exists ⇔ the stage's command finished
    command: list[str]
    seconds: float = 0.0  # expected duration (0: unknown)
    may_fail: bool = False  # a non-zero exit still finishes the stage when the artifact exists
    reuse: bool = False  # an existing artifact is done, whoever made it


@dataclass
class Pipeline:
    stages: list[Stage]
    report: dict[str, Any]  # the [report] section with its placeholders filled
    source: Path  # the TOML it was read from


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")
    return CONFIGS / f"pipeline-{name}.toml"


def load_pipeline(path: Path, out: Path, overrides: dict[str, str] | None = None) -> Pipeline:
    """The pipeline of the TOML file `path`, its placeholders filled: {out}, {configs} (the
    packaged configs) and [vars], which `overrides` replace. A variable may be a list: an
    argument that is just "{name}" then becomes its items. An unknown placeholder, field or
    section is an error naming the file and the stage."""
    spec = read_toml(path)
    unknown = set(spec) - {"vars", "stage", "report", "description"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
    builtins = {"out": str(out), "configs": str(CONFIGS)}
    variables: dict[str, Any] = dict(spec.get("vars", {}))
    for key, value in (overrides or {}).items():
        if key not in variables:
            raise ValueError(f"{path}: no variable {key!r} to set; [vars] has {sorted(variables)}")
        variables[key] = value

    def fill(text: str, where: str, values: dict[str, Any]) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1)
            if name not in values or isinstance(values[name], list):
                what = "a list, usable only as a whole argument" if name in values else "unknown"
                raise ValueError(f"{path}: {where}: placeholder {{{name}}} is {what}")
            return str(values[name])

        return _PLACEHOLDER.sub(value, text)

    values: dict[str, Any] = dict(builtins)
    for name, value in variables.items():  # variables may use {out} and {configs}
        where = f"[vars] {name}"
        values[name] = (
            [fill(str(item), where, builtins) for item in value]
            if isinstance(value, list)
            else fill(str(value), where, builtins)
        )

    def arguments(run: list[Any], where: str) -> list[str]:
        argv: list[str] = []
        for arg in map(str, run):
            whole = _PLACEHOLDER.fullmatch(arg)
            if whole and isinstance(values.get(whole.group(1)), list):
                argv += values[whole.group(1)]
            else:
                argv.append(fill(arg, where, values))
        return argv

    stages = []
    for number, stage in enumerate(spec.get("stage", []), start=1):
        where = f"stage {number} ({stage.get('name', 'unnamed')})"
        missing = {"name", "done", "run"} - set(stage)
        extra = set(stage) - {"name", "done", "run", "seconds", "may_fail", "reuse"}
        if missing or extra:
            raise ValueError(
                f"{path}: {where}: "
                + (f"missing {sorted(missing)}" if missing else f"unknown fields {sorted(extra)}")
            )
        stages.append(
            Stage(
                stage["name"],
                Path(fill(stage["done"], where, values)),
                arguments(stage["run"], where),
                float(stage.get("seconds", 0)),
                bool(stage.get("may_fail", False)),
                bool(stage.get("reuse", False)),
            )
        )
    if not stages:
        raise ValueError(f"{path}: no [[stage]]")
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: stage names repeat: {names}")
    report = _fill_all(spec.get("report", {}), lambda text: fill(text, "[report]", values))
    return Pipeline(stages, report, path)


def _fill_all(value: Any, fill) -> Any:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, list):
        return [_fill_all(item, fill) for item in value]
    if isinstance(value, dict):
        return {key: _fill_all(item, fill) for key, item in value.items()}
    return value


def run_pipeline(pipeline: Pipeline, out: Path) -> None:
    """Every stage of `pipeline` not yet done, in order, recorded in `out`/pipeline.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    stages = [stage.name for stage in pipeline.stages]
    plan = {"source": str(pipeline.source), "report": pipeline.report, "stages": stages}
    write_json(out / PLAN_FILE, plan)
    run_stages(pipeline.stages, out / RECORD_FILE)


def run_stages(stages: list[Stage], record: Path | None = None) -> None:
    """Run each stage whose artifact does not exist (and, with a `record` file, whose finish is
    not recorded there), showing the elapsed time and an ETA from the stages' `seconds`."""
    from charter.commands import main

    finished = {row["stage"]: row for row in ResumableJsonl(record).rows} if record else {}
    started = time.perf_counter()
    for number, stage in enumerate(stages, start=1):
        header = f"[{number}/{len(stages)}] {stage.name}"
        row = finished.get(stage.name)
        if row and row["command"] != stage.command:
            raise ValueError(
                f"stage {stage.name!r} finished with another command ({row['command']}); "
                f"remove {stage.artifact} and its line in {record} to run it again"
            )
        if stage.artifact.exists() and (row or record is None or stage.reuse):
            log(f"{header}: done ({stage.artifact})")
            continue
        left = sum(s.seconds for s in stages[number - 1 :])
        log(
            f"{header}: charter {' '.join(stage.command)}\n"
            f"{header}: {_duration(time.perf_counter() - started)} elapsed"
            + (f", about {_duration(left)} left" if left else "")
        )
        stage_started = time.perf_counter()
        _run(main, stage)
        seconds = time.perf_counter() - stage_started
        if record:
            finish = {
                "stage": stage.name,
                "command": stage.command,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            ResumableJsonl(record).append([finish])
        log(f"{header}: finished in {_duration(seconds)}")


def _run(main, stage: Stage) -> None:
    try:
        main(stage.command)
    except SystemExit as e:
        if e.code in (None, 0):
            return
        if e.code == 130:  # Ctrl-C: the stage saved its step; exit as interrupted programs do
            raise
        if stage.may_fail and stage.artifact.exists():
            log(f"stage {stage.name!r}: {e.code}")  # a result (the gate's verdict), not a crash
            return
        raise SystemExit(f"pipeline stage {stage.name!r} failed: {e.code}") from e


def read_record(out: Path) -> list[dict[str, Any]]:
    """The finished stages of the run in `out`, in the order they finished."""
    path = out / RECORD_FILE
    return ResumableJsonl(path).rows if path.exists() else []


def read_plan(out: Path) -> dict[str, Any]:
    path = out / PLAN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a pipeline run (charter pipeline writes it)")
    return read_json(path)


def _duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
