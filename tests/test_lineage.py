"""Lineage: a finished training run records its stage (command, settings, data with its rows and
licences) after the stages of the checkpoint it started from, an interrupted one records nothing,
an imported model's lineage starts at its import, and the model card lists the stages."""

from __future__ import annotations

import json

import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.lineage import LINEAGE_FILE, data_file, read_lineage
from charter.data.sft import write_sft
from charter.data.synthetic import generate
from charter.eval.card import _lineage_section
from charter.model import Transformer
from tests.helpers import micro

SETTINGS = ["train.steps=2", "train.batch_size=2", "train.micro_batch_size=2", "train.save_every=1"]


def sft(base, data, out, *extra):
    main(["sft", "--base", str(base), "--data", str(data), "--out", str(out),
          "--set", *SETTINGS, *extra])  # fmt: skip


def test_each_finished_run_adds_its_stage_to_its_base_s(tmp_path, tokenizer):
    torch.manual_seed(0)
    base = save_checkpoint(Transformer(micro()), tmp_path / "imported", tokenizer)
    (base / "source.json").write_text(json.dumps({"format": "gguf", "path": "m.gguf"}))
    data = tmp_path / "sft.jsonl"
    write_sft(generate("train", 4, seed=0), data)

    sft(base, data, tmp_path / "first", "train.stop_after=1")
    assert not (tmp_path / "first" / "final").exists()  # interrupted: no final, no lineage
    sft(base, data, tmp_path / "first")
    first = tmp_path / "first" / "final"
    stages = read_lineage(first)
    assert [s["name"] for s in stages] == ["import", "sft"]
    assert stages[0]["source"]["path"] == "m.gguf"
    assert stages[1]["command"].startswith(f"charter sft --base {base} --data {data}")
    assert stages[1]["settings"]["train"]["steps"] == 2 and stages[1]["settings"]["config"] is None
    assert stages[1]["data"] == [data_file(data)]
    assert stages[1]["data"][0]["rows"] == 4 and stages[1]["data"][0]["licence"] == "Apache-2.0"

    sft(first, data, tmp_path / "second")
    second = read_lineage(tmp_path / "second" / "final")
    assert [s["name"] for s in second] == ["import", "sft", "sft"] and second[:2] == stages
    card = "\n".join(_lineage_section(tmp_path / "second" / "final"))
    assert "1. **import** from gguf: m.gguf" in card
    assert "3. **sft**: `charter sft --base" in card and "4 rows (Apache-2.0)" in card


def test_data_files_name_their_licences_or_say_none_is_recorded(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"licence": "MIT"}\n{"licence": "CC-BY-4.0"}\n{"text": "x"}\n')
    assert data_file(path) == {
        "path": str(path),
        "rows": 3,
        "licence": "CC-BY-4.0, MIT, and rows without one",
    }
    path.write_text('{"text": "x"}\n')
    assert data_file(path)["licence"] == "not recorded"
    assert data_file(tmp_path) == {"path": str(tmp_path)}  # token shards: a directory
    path.write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: invalid JSON"):
        data_file(path)


def test_a_model_made_elsewhere_has_no_lineage(tmp_path, tokenizer):
    checkpoint = save_checkpoint(Transformer(micro()), tmp_path / "elsewhere", tokenizer)
    assert read_lineage(checkpoint) == [] and not (checkpoint / LINEAGE_FILE).exists()
    assert "Not recorded with the checkpoint" in "\n".join(_lineage_section(checkpoint))
