"""Plots of a run's `metrics.jsonl`: `charter plot RUN/metrics.jsonl --y val_bpb --out curve.png`.

Several files can be drawn on one axes (e.g. two runs of an ablation); each line is labelled
with its run directory's name, or with `--label`.
"""

from __future__ import annotations

from pathlib import Path

from charter.metrics import read_metrics


def plot_metrics(
    paths: list[Path],
    y: str,
    out: Path,
    x: str = "tokens",
    labels: list[str] | None = None,
    title: str | None = None,
) -> None:
    plt = pyplot()
    labels = labels or [p.parent.name for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} metrics files")
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for path, label in zip(paths, labels):
        rows = [r for r in read_metrics(path) if y in r and x in r]
        if not rows:
            raise ValueError(f"{path}: no rows with both {x!r} and {y!r}")
        axes.plot([r[x] for r in rows], [r[y] for r in rows], marker="o", markersize=3, label=label)
    axes.set_xlabel(x.replace("_", " "))
    axes.set_ylabel(y.replace("_", " "))
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    save_figure(figure, out)


def pyplot():
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, out: Path) -> None:
    """Lay `figure` out, write it to `out` (a PNG) and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
