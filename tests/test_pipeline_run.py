"""The `micro` pipeline for real: every stage runs, the report is drawn (and opened in
Chromium), and a run killed with SIGKILL inside a training stage, inside a generation stage and
while writing a checkpoint, then rerun, ends with the uninterrupted run's eval.json and no record
twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charter.cli import main
from charter.pipeline import read_record

ROOT = Path(__file__).parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CANDIDATE = Path("redteam/round-1/sft/final")
pytestmark = pytest.mark.slow


def run_micro(out: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # the preset's paths of ../shared/data and README.md
        main(["pipeline", "--preset", "micro", "--out", str(out)])


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run, made in RUN and then moved aside, so that the killed run can be
    made in the same directory: the files name their paths (and draws are keyed by them)."""
    out = tmp_path_factory.mktemp("micro") / "run"
    run_micro(out)
    return out.rename(out.parent / "straight")


def test_every_stage_ran_and_the_candidate_was_gated(straight):
    record = read_record(straight)
    stages = [row["stage"] for row in record]
    assert len(stages) == len(set(stages)) == 23
    gate = json.loads((straight / CANDIDATE / "gate.json").read_text())
    assert gate["passed"] is False and gate["failed"]  # a 107k-parameter model is not released
    assert (straight / CANDIDATE / "card.md").exists()
    loop = json.loads((straight / "redteam" / "loop.json").read_text())
    assert [row["round"] for row in loop["rounds"]] == [0, 1]


def test_the_report_draws_every_figure(straight):
    for name in ("loss", "helpfulness-harmlessness", "reward-kl", "asr"):
        assert (straight / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    report = (straight / "report.md").read_text()
    headings = ["Training curves", "Helpfulness and harmlessness by stage",
                "PPO: reward against KL", "Red-team rounds", "Release gate", "Stages"]  # fmt: skip
    for heading in headings:
        assert f"## {heading}" in report
    assert "failed on" in report and "Not yet measured" not in report
    assert "| red-team round 1 |" in report


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
def test_the_html_report_renders_in_chromium(straight, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((straight / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        assert len(widths) == 4 and all(width > 0 for width in widths)  # every figure loaded
        assert page.title() == "Charter: the micro pipeline"
        assert page.locator("table").count() == 4
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


# Each kill point: a patch that writes the marker file and then waits to be killed.
KILL_POINTS = {
    # inside a training stage: SFT's step-50 checkpoint written, its steps 51-150 to go
    "training": """
import charter.train.loop as loop
real = loop.replace_directory
def replace_directory(tmp, directory):
    real(tmp, directory)
    if directory.name == "step-000050" and directory.parent.parent.name == "sft":
        stop()
loop.replace_directory = replace_directory
""",
    # inside a generation stage: SL-CAI's first batch of targets written
    "generation": """
import charter.files as files
real = files.ResumableJsonl.append
def append(self, rows):
    real(self, rows)
    if self.path.name == "select.jsonl":
        stop()
files.ResumableJsonl.append = append
""",
    # while writing a checkpoint: PPO's last one (step 16) half written, not yet in place
    "checkpoint": """
import charter.train.loop as loop
real = loop.replace_directory
def replace_directory(tmp, directory):
    if directory.name == "step-000016" and directory.parent.parent.name == "ppo":
        stop()
    real(tmp, directory)
loop.replace_directory = replace_directory
""",
}
SCRIPT = """
import sys, time
from pathlib import Path
def stop():
    Path(sys.argv[1]).write_text("")
    time.sleep(600)  # killed here
{patch}
from charter.cli import main
main(["pipeline", "--preset", "micro", "--out", sys.argv[2]])
"""


def test_sigkilled_three_times_it_resumes_to_the_same_eval_json(straight):
    out = straight.parent / "run"  # where the straight run was made
    for point, patch in KILL_POINTS.items():
        marker = straight.parent / point
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT.format(patch=patch), str(marker), str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, f"the pipeline ended before the {point} kill point"
            assert time.monotonic() < deadline, f"never reached the {point} kill point"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    left = [p.name for p in (out / "ppo" / "checkpoints").iterdir()]
    assert any(name.startswith(".step-000016.tmp") for name in left), left  # half written
    run_micro(out)

    for name in ("eval.json", "gate.json"):
        resumed = json.loads((out / CANDIDATE / name).read_text())
        uninterrupted = json.loads((straight / CANDIDATE / name).read_text())
        assert resumed == uninterrupted, name
    stages = [row["stage"] for row in read_record(out)]
    assert len(stages) == len(set(stages)) == 23
    for jsonl in ("cai/select.jsonl", "cai/labels.jsonl", "ppo/rollouts.jsonl"):
        lines = (out / jsonl).read_text().splitlines()
        assert lines == (straight / jsonl).read_text().splitlines(), jsonl  # none twice
    findings = "SELECT COUNT(*) FROM findings"
    counts = [sqlite3.connect(run / "redteam" / "findings.sqlite").execute(findings).fetchone()
              for run in (out, straight)]  # fmt: skip
    assert counts[0] == counts[1]
