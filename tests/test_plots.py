"""`charter plot`: PNG curves from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from charter.cli import main


def test_plot_writes_a_png_of_the_metric(tmp_path):
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    rows = [{"step": s, "tokens": 100 * s, "loss": 5 - s / 10} for s in range(1, 11)]
    rows[4]["val_bpb"], rows[9]["val_bpb"] = 3.0, 2.5
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "curve.png"
    main(
        [
            "plot",
            str(metrics),
            str(metrics),
            "--y",
            "val_bpb",
            "--label",
            "a",
            "b",
            "--out",
            str(out),
        ]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no rows with both 'tokens' and 'val_loss'"):
        main(["plot", str(metrics), "--y", "val_loss", "--out", str(out)])
    with pytest.raises(SystemExit, match="1 labels for 2 metrics files"):
        main(["plot", str(metrics), str(metrics), "--y", "loss", "--label", "a", "--out", str(out)])
