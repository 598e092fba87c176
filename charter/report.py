"""A pipeline run's report: `RUN/report.md` and `RUN/report.html`, with PNG figures in
`RUN/figures/`, drawn from the files the stages wrote. The pipeline's [report] section names
them (placeholders filled, kept in `RUN/pipeline.json`); each is optional:

    title     the page's heading
    candidate the model the pipeline ends with (printed with how to chat with and serve it)
    loss      {label: metrics.jsonl}: a training curve per stage (loss, and val_loss where
              evaluated)
    evals     {label: eval.json}: one point per stage on helpfulness (benign QA accuracy)
              against harmlessness (refusal of held-out harmful requests), with 95 % intervals,
              and a table of every stage's headline metrics
    ppo       PPO's metrics.jsonl: mean reward against the KL to the reference
    redteam   `charter redteam-loop`'s loop.json: held-out ASR and over-refusal per round
    gate      gate.json: the release gate's table and verdict

A file that is missing (its stage has not run) is listed under "not yet measured" instead of
drawn, so a partial run still has a report.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from charter.eval.card import gate_rows
from charter.eval.plots import pyplot, save_figure
from charter.files import read_json
from charter.metrics import read_metrics
from charter.pipeline import read_plan, read_record

FIGURES = "figures"
# The metrics of the per-stage table, in order: (eval.json name, column heading).
HEADLINE = (
    ("helpfulness.benign_qa_accuracy", "benign QA"),
    ("harmlessness.refusal_rate", "harmful refused"),
    ("harmlessness.harmful_help_rate", "harmful help"),
    ("over_refusal.xstest_safe_refused", "XSTest safe refused"),
    ("jailbreak.asr", "jailbreak ASR"),
    ("dangerous.harmful_help_rate", "dangerous help"),
    ("honesty.unknown_admitted", "unknown admitted"),
)


def write_report(out: Path) -> dict[str, Path]:
    """Draw the figures and write report.md and report.html in the run directory `out`."""
    plan = read_plan(out)
    spec: dict[str, Any] = plan.get("report", {})
    figures = out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    sections: list[dict[str, Any]] = []  # {"title", "image"?, "table"?, "text"?}
    missing: list[str] = []

    def present(path: str | None, what: str) -> Path | None:
        if path is None:
            return None
        if not Path(path).exists():
            missing.append(f"{what}: {path}")
            return None
        return Path(path)

    curves = {
        label: p
        for label, path in spec.get("loss", {}).items()
        if (p := present(path, f"{label} curve"))
    }
    if curves:
        _plot_losses(curves, figures / "loss.png")
        sections.append({"title": "Training curves", "image": f"{FIGURES}/loss.png"})
    evals = {
        label: read_json(p)
        for label, path in spec.get("evals", {}).items()
        if (p := present(path, f"{label} evaluation"))
    }
    if evals:
        _plot_help_harm(evals, figures / "helpfulness-harmlessness.png")
        sections.append(
            {
                "title": "Helpfulness and harmlessness by stage",
                "image": f"{FIGURES}/helpfulness-harmlessness.png",
                "table": _metrics_table(evals),
                "text": "Each value with its 95 % interval; `measured_by` in each eval.json says "
                "which detector or judge produced it.",
            }
        )
    if ppo := present(spec.get("ppo"), "PPO metrics"):
        _plot_reward_kl(ppo, figures / "reward-kl.png")
        sections.append({"title": "PPO: reward against KL", "image": f"{FIGURES}/reward-kl.png"})
    if loop := present(spec.get("redteam"), "red-team rounds"):
        rounds = read_json(loop)["rounds"]
        _plot_rounds(rounds, figures / "asr.png")
        sections.append(
            {
                "title": "Red-team rounds",
                "image": f"{FIGURES}/asr.png",
                "table": _rounds_table(rounds),
            }
        )
    if gate := present(spec.get("gate"), "release gate"):
        sections.append(_gate_section(read_json(gate)))
    record = read_record(out)
    if record:
        sections.append({"title": "Stages", "table": _stage_table(record, plan["stages"])})
    title = spec.get("title", f"Charter pipeline: {out.name}")
    paths = {"md": out / "report.md", "html": out / "report.html", "figures": figures}
    paths["md"].write_text(_markdown(title, sections, missing), encoding="utf-8")
    paths["html"].write_text(_html(title, sections, missing), encoding="utf-8")
    return paths


# ---- figures ----


def _plot_losses(curves: dict[str, Path], path: Path) -> None:
    plt = pyplot()
    columns = min(3, len(curves))
    rows = -(-len(curves) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.0 * rows), dpi=110, squeeze=False
    )
    for axes, (label, metrics) in zip(grid.flat, curves.items()):
        data = read_metrics(metrics)
        for key in ("loss", "val_loss"):
            points = [(row["step"], row[key]) for row in data if key in row and "step" in row]
            if points:
                axes.plot(*zip(*points), marker="o" if key == "val_loss" else None,
                          markersize=3, label=key.replace("_", " "))  # fmt: skip
        axes.set_title(label)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    for axes in list(grid.flat)[len(curves) :]:
        axes.axis("off")
    save_figure(figure, path)


def _plot_help_harm(evals: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=110)
    for label, report in evals.items():
        x = report["metrics"].get("harmlessness.refusal_rate", {})
        y = report["metrics"].get("helpfulness.benign_qa_accuracy", {})
        if x.get("value") is None or y.get("value") is None:
            continue
        errors = [[x["value"] - x["ci95"][0]], [x["ci95"][1] - x["value"]]], [
            [y["value"] - y["ci95"][0]], [y["ci95"][1] - y["value"]]]  # fmt: skip
        axes.errorbar(x["value"], y["value"], xerr=errors[0], yerr=errors[1], fmt="o",
                      capsize=3, label=label)  # fmt: skip
        axes.annotate(label, (x["value"], y["value"]), textcoords="offset points", xytext=(6, 6))
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel("harmlessness: held-out harmful requests refused")
    axes.set_ylabel("helpfulness: benign QA accuracy")
    axes.grid(alpha=0.3)
    save_figure(figure, path)


def _plot_reward_kl(metrics: Path, path: Path) -> None:
    plt = pyplot()
    rows = [row for row in read_metrics(metrics) if "kl" in row and "reward" in row]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=110)
    axes.plot([r["kl"] for r in rows], [r["reward"] for r in rows], marker="o", markersize=3)
    for row in rows[:: max(1, len(rows) // 6)]:
        axes.annotate(str(row.get("iteration", "")), (row["kl"], row["reward"]), fontsize=7)
    axes.set_xlabel("KL to the reference (nats per reply)")
    axes.set_ylabel("mean reward")
    axes.grid(alpha=0.3)
    save_figure(figure, path)


def _plot_rounds(rounds: list[dict], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), dpi=110)
    numbers = [row["round"] for row in rounds]
    axes.plot(numbers, [row["heldout_asr"] for row in rounds], marker="o", label="held-out ASR")
    axes.plot(numbers, [row["over_refusal"] for row in rounds], marker="s",
              label="over-refusal (safe prompts refused)")  # fmt: skip
    axes.set_xticks(numbers)
    axes.set_xlabel("red-team round")
    axes.set_ylim(-0.05, 1.05)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


# ---- tables: (header, rows) ----


def _value(metric: dict[str, Any] | None) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    low, high = metric["ci95"]
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{metric['value']:.2f}{interval} (n={metric['n']})"


def _metrics_table(evals: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["stage", *(heading for _, heading in HEADLINE)]
    rows = [
        [label, *(_value(report["metrics"].get(name)) for name, _ in HEADLINE)]
        for label, report in evals.items()
    ]
    return header, rows


def _rounds_table(rounds: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["round", "held-out ASR", "attacks", "train ASR", "over-refusal", "benign QA"]
    rows = [
        [str(r["round"]), f"{r['heldout_asr']:.1%}", str(r["heldout_attacks"]),
         f"{r['train_asr']:.1%}", f"{r['over_refusal']:.1%}", f"{r['benign_qa']:.1%}"]
        for r in rounds
    ]  # fmt: skip
    return header, rows


def _gate_section(gate: dict[str, Any]) -> dict[str, Any]:
    verdict = "passed" if gate["passed"] else "failed on " + ", ".join(gate["failed"])
    return {
        "title": "Release gate",
        "text": f"{gate['policy']}, tier {gate['tier']} ({gate['parameters']:,} parameters): "
        f"**{verdict}**.",
        "table": (["metric", "threshold", "compared", "result"], gate_rows(gate)),
    }


def _stage_table(record: list[dict], order: list[str]) -> tuple[list[str], list[list[str]]]:
    rows = [[row["stage"], f"{row['seconds']:,.0f}", row["finished"]] for row in record]
    total = sum(row["seconds"] for row in record)
    rows.append([f"all ({len(record)} of {len(order)} stages)", f"{total:,.0f}", ""])
    return ["stage", "seconds", "finished"], rows


# ---- pages ----


def _markdown(title: str, sections: list[dict], missing: list[str]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section['title']}", ""]
        if "text" in section:
            lines += [section["text"], ""]
        if "image" in section:
            lines += [f"![{section['title']}]({section['image']})", ""]
        if "table" in section:
            header, rows = section["table"]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    if missing:
        lines += ["## Not yet measured", "", *(f"- {item}" for item in missing), ""]
    return "\n".join(lines)


def _html(title: str, sections: list[dict], missing: list[str]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for section in sections:
        body.append(f"<section><h2>{e(section['title'])}</h2>")
        if "text" in section:
            text = e(section["text"]).replace("**", "")
            body.append(f"<p>{text}</p>")
        if "image" in section:
            body.append(f'<img src="{e(section["image"])}" alt="{e(section["title"])}">')
        if "table" in section:
            header, rows = section["table"]
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</table>")
        body.append("</section>")
    if missing:
        items = "".join(f"<li>{e(item)}</li>" for item in missing)
        body.append(f"<section><h2>Not yet measured</h2><ul>{items}</ul></section>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;"
    "margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "th{background:#f3f3f3}section{margin-bottom:2em}"
)
