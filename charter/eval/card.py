"""The model card (`card.md`), written by the release gate beside the checkpoint: what the model
is, how it was made (when its lineage was recorded), what it measured with intervals, the gate's
verdict, and what it is known not to do well.

The lineage is the checkpoint's `lineage.json` (`charter.data.lineage`: the training commands write
it), or for an imported model its `source.json`: its origin and licence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charter.checkpoint import load_config
from charter.config import num_parameters
from charter.data.lineage import LINEAGE_FILE, read_lineage
from charter.files import read_json

CARD_FILE = "card.md"

LIMITATIONS = [
    "Refusal is detected by patterns, which miss implicit refusals (their accuracy against "
    "people's labels: docs/refusal.md), and with a judge by its refusal head; harm by the "
    "trained judge, a small classifier (its accuracy: docs/judge-data.md). Both err; every "
    "rate is theirs, not a person's.",
    "Every reply is greedy and at most the suite's max_new_tokens long, to a single prompt (the "
    "jailbreak section's multi-turn attacks aside): longer or sampled conversations may differ.",
    "The held-out sets are public: a model trained elsewhere may have seen them.",
]


def _cell(value: Any) -> str:
    text = "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _model_section(checkpoint: Path) -> list[str]:
    config = load_config(checkpoint)
    rows = [
        ("checkpoint", str(checkpoint)),
        ("architecture", f"{config.hf_architecture}: {config.num_hidden_layers} layers, "
                         f"width {config.hidden_size}, {config.num_attention_heads} heads "
                         f"({config.num_key_value_heads} key-value)"),
        ("parameters", f"{num_parameters(config) / 1e6:,.1f} M"),
        ("context", f"{config.max_position_embeddings:,} tokens"),
    ]  # fmt: skip
    source = checkpoint / "source.json"
    if source.exists():
        origin = read_json(source)
        metadata = origin.get("metadata", {})
        rows.append(("imported from", f"{origin.get('format', '?')}: {origin.get('path', '?')}"))
        rows.append(("its name", metadata.get("general.name", "not recorded")))
        rows.append(("its licence", metadata.get("general.license", "not recorded")))
    return ["## Model", "", "| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)]


def _lineage_section(checkpoint: Path) -> list[str]:
    lines = ["## How it was made", ""]
    stages = read_lineage(checkpoint)
    if not stages:
        return lines + [
            f"Not recorded with the checkpoint (no {LINEAGE_FILE}): the stages, their settings "
            "and their data are whatever made it elsewhere."
        ]
    for number, stage in enumerate(stages, start=1):
        if stage["name"] == "import":
            source = stage.get("source", {})
            lines.append(f"{number}. **import** from {source.get('format', '?')}: "
                         f"{source.get('path', '?')}")  # fmt: skip
            continue
        lines.append(f"{number}. **{stage['name']}**: `{stage.get('command', '?')}`")
        for section, values in stage.get("settings", {}).items():
            lines.append(f"   - {section}: {json.dumps(values)}")
        for data in stage.get("data", []):
            rows = f", {data['rows']:,} rows" if "rows" in data else ""
            lines.append(f"   - data: {data['path']}{rows} ({data.get('licence', 'not recorded')})")
    return lines


def _evaluation_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Evaluation",
        "",
        f"`charter eval` of `{report['model']}`; judge: {report.get('judge') or 'none'}; "
        f"safety guard: {report.get('guard') or 'none'}.",
        "",
        "| metric | value | 95 % interval | n | measured by |",
        "|---|---:|---|---:|---|",
    ]
    for name, metric in report["metrics"].items():
        low, high = metric["ci95"]
        interval = "–" if low is None else f"{low:.3f} – {high:.3f}"
        lines.append(
            f"| {name} | {_cell(metric['value'])} | {interval} | {metric['n']} | "
            f"{_cell(metric['measured_by'])} |"
        )
    if report.get("skipped"):
        lines += [
            "",
            "Not measured: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()),
        ]
    lines += ["", "Evaluation data (with the licences its rows name):", ""]
    lines += [f"- {what} ({licence})" for what, licence in report.get("data", {}).items()]
    return lines


def _gate_section(verdict: dict[str, Any]) -> list[str]:
    outcome = "**passed**" if verdict["passed"] else "**failed**: " + ", ".join(verdict["failed"])
    lines = [
        "## Release gate",
        "",
        f"Policy {verdict['policy']} ({verdict['policy_file']}), tier {verdict['tier']} "
        f"({verdict['parameters']:,} parameters): {outcome}.",
        "",
        "| metric | threshold | compared | result |",
        "|---|---|---:|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in gate_rows(verdict)]
    return lines


def gate_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """One row per check of a gate.json: metric, threshold, compared value, result."""
    return [
        [c["metric"], c["threshold"], _cell(c["compared"]),
         "pass" if c["passed"] else f"FAIL ({c['reason']})"]
        for c in verdict["checks"]
    ]  # fmt: skip


def model_card(checkpoint: Path, report: dict[str, Any], verdict: dict[str, Any]) -> str:
    """card.md's text for the model in `checkpoint`, its eval.json report and its gate verdict."""
    limitations = list(LIMITATIONS)
    if verdict["failed"]:
        limitations.insert(0, "Below the release policy on: " + ", ".join(verdict["failed"]) + ".")
    sections = [
        [f"# Model card: {report['model']}"],
        _model_section(checkpoint),
        _lineage_section(checkpoint),
        _evaluation_section(report),
        _gate_section(verdict),
        ["## Known limitations", "", *(f"- {item}" for item in limitations)],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"
