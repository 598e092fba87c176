"""SL-CAI: critique → revision chains and the small-scale selection mode, on scripted generators
(what the stages do with turns), plus the packaged constitution end to end on the micro model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from charter.align.constitution import Constitution, load_constitution
from charter.align.feedback import FewShotExample, Principle
from charter.align.sl_cai import (
    ReviseSettings,
    SelectSettings,
    echoes,
    principle_pool,
    revise_chains,
    round_report,
    select_responses,
    sft_records,
)
from charter.chat.format import CharterFormat
from charter.data.prompt_sets import Prompt
from tests.generator_helpers import ScriptedGenerator


def _principle(name: str, category: str) -> Principle:
    return Principle(
        name,
        critique_request=f"Critique under {name}.",
        revision_request=f"Revise under {name}.",
        comparison_question=f"Which is better under {name}?",
        category=category,
    )


PRINCIPLES = (
    _principle("no-weapons", "weapons"),
    _principle("no-fraud", "fraud"),
    _principle("honest", "honesty"),
    _principle("helpful", "non-evasive helpfulness"),
)
EXAMPLE = FewShotExample(
    "How do I make a pipe bomb?", "Take a pipe and…", "Critique.", "It helps build a bomb.",
    "Revise.", "I can't help build weapons; if you're curious about chemistry, try a class.",
)  # fmt: skip
CONSTITUTION = Constitution(PRINCIPLES, (EXAMPLE,), "Be helpful, honest and harmless.", Path("t"))
REFUSAL = "I can't help with that, because it could hurt people. I can explain safety instead."
COMPLIANCE = "Sure! Step one is to get the parts."


def _prompt(text: str, harmful: bool = True, category: str = "weapons") -> Prompt:
    return Prompt(text, "donotanswer", category, harmful, "test:1", "MIT")


PROMPTS = [_prompt("How do I build a gun?"), _prompt("How do I forge a cheque?", category="fraud"),
           _prompt("How do I make napalm?")]  # fmt: skip


def _is_refusal(text: str) -> bool:
    return text.startswith("I can't")


def _last_user_text(request) -> str:
    user = [m for m in request.conversation.messages if m.role == "user"]
    return user[-1].content[0].text


def _chain_script(request):
    """Answers like a model asked for a response, a critique or a revision."""
    asked = _last_user_text(request)
    if asked.startswith("Critique under"):
        return f"Critique ({asked}): it helps with harm."
    if asked.startswith("Revise under"):
        return REFUSAL
    return COMPLIANCE


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_principle_pool_is_the_prompts_domain_and_the_general_principles():
    pool = principle_pool(CONSTITUTION, "weapons")
    assert [p.name for p in pool] == ["no-weapons", "honest", "helpful"]
    assert principle_pool(CONSTITUTION, "unknown") == list(PRINCIPLES)
    assert principle_pool(CONSTITUTION, "drugs") == list(PRINCIPLES)  # no drugs principle


def test_revise_keeps_the_whole_chain_and_the_last_revision(tokenizer, tmp_path):
    policy = ScriptedGenerator(CharterFormat(tokenizer), _chain_script, name="policy")
    reviser = ScriptedGenerator(CharterFormat(tokenizer), _chain_script, name="critic")
    out = tmp_path / "chains.jsonl"
    settings = ReviseSettings(rounds=2, batch_size=8)
    outcomes = revise_chains(PROMPTS + PROMPTS[:1], policy, reviser, CONSTITUTION, out, settings)
    assert outcomes == {"revised": 3, "duplicate prompt": 1}
    rows = _read(out)
    assert [r["prompt"] for r in rows] == [p.text for p in PROMPTS]
    first = rows[0]
    assert (first["response"], first["final"], first["stopped"]) == (COMPLIANCE, REFUSAL, None)
    assert (first["policy_model"], first["reviser_model"]) == ("policy", "critic")
    assert len(first["rounds"]) == 2
    for row in rows:
        pool = {p.name for p in principle_pool(CONSTITUTION, row["category"])}
        for done in row["rounds"]:
            assert done["principle"] in pool
            assert done["critique"].startswith(f"Critique (Critique under {done['principle']}")
    # The policy answered once (one call); the reviser made one critique and one revision call
    # per round, for the whole batch each.
    assert policy.batches == [3] and reviser.batches == [3, 3, 3, 3]
    # Round 2 revises round 1's revision.
    second_round = [r for r in reviser.requests if _last_user_text(r).startswith("Critique")][3:]
    assert all(r.conversation.messages[-2].content[0].text == REFUSAL for r in second_round)
    assert round_report(rows, _is_refusal) == [
        {"round": 0, "chains": 3, "declined": 0, "rate": 0.0},
        {"round": 1, "chains": 3, "declined": 3, "rate": 1.0},
        {"round": 2, "chains": 3, "declined": 3, "rate": 1.0},
    ]


def test_a_cut_off_revision_ends_the_chain_at_the_last_complete_response(tokenizer, tmp_path):
    revisions = iter(["First revision.", ("Second revision, cut", "max_tokens")])

    def script(request):
        asked = _last_user_text(request)
        if asked.startswith("Critique under"):
            return "A critique."
        return next(revisions) if asked.startswith("Revise under") else COMPLIANCE

    generator = ScriptedGenerator(CharterFormat(tokenizer), script)
    out = tmp_path / "chains.jsonl"
    revise_chains(PROMPTS[:1], generator, generator, CONSTITUTION, out, ReviseSettings(rounds=4))
    (row,) = _read(out)
    assert row["final"] == "First revision."
    assert row["stopped"] == "round 2: revision cut off"
    assert [r["unusable"] for r in row["rounds"]] == [None, "cut off"]  # no rounds 3 and 4


def test_an_interrupted_revise_run_continues_without_duplicates(tokenizer, tmp_path):
    def run(prompts, out):
        generator = ScriptedGenerator(CharterFormat(tokenizer), _chain_script)
        settings = ReviseSettings(rounds=1, batch_size=2)
        return revise_chains(prompts, generator, generator, CONSTITUTION, out, settings)

    whole = tmp_path / "whole.jsonl"
    run(PROMPTS, whole)
    resumed = tmp_path / "resumed.jsonl"
    run(PROMPTS[:2], resumed)  # killed after the first batch…
    with open(resumed, "a", encoding="utf-8") as f:
        f.write('{"prompt": "How do I make napalm?", "ha')  # …while writing the second
    outcomes = run(PROMPTS + PROMPTS[:1], resumed)
    assert outcomes == {"already in the file": 3, "revised": 1}
    assert resumed.read_text(encoding="utf-8") == whole.read_text(encoding="utf-8")


def test_select_keeps_the_first_acceptable_sample_under_the_constitution(tokenizer, tmp_path):
    def script(request):
        # Sample k of each prompt is seeded prompt_seed + k: refuse on the third sample only.
        text = _last_user_text(request)
        if text == "How do I build a gun?":
            third = request.options.seed == seeds[text] + 2
            return REFUSAL if third else COMPLIANCE
        if text == "How do I make napalm?":
            return COMPLIANCE  # never declines: nothing acceptable
        return REFUSAL if text.startswith("How do I kill") else COMPLIANCE

    from charter.align.sl_cai import prompt_seed

    benign = _prompt("How do I kill a Python process?", harmful=False, category="none")
    prompts = [PROMPTS[0], PROMPTS[2], benign, _prompt("What is 2 + 2?", False, "none")]
    seeds = {p.text: prompt_seed(0, p.text) for p in prompts}
    generator = ScriptedGenerator(CharterFormat(tokenizer), script)
    out = tmp_path / "picks.jsonl"
    settings = SelectSettings(samples=3, temperature=0.7)
    outcomes = select_responses(prompts, generator, CONSTITUTION, _is_refusal, out, settings)
    assert outcomes == {"selected": 2, "no acceptable sample": 2}
    gun, napalm, kill, sum_ = _read(out)
    assert (gun["chosen"], gun["final"]) == (2, REFUSAL)
    assert [c["acceptable"] for c in gun["candidates"]] == [False, False, True]
    assert napalm["final"] is None and kill["final"] is None  # the benign one only refused
    assert sum_["final"] == COMPLIANCE
    request = generator.requests[0]
    assert request.conversation.system == CONSTITUTION.system_prompt
    shown = [m.content[0].text for m in request.conversation.messages]
    assert shown == [EXAMPLE.prompt, EXAMPLE.revision, "How do I build a gun?"]
    assert {r.options.temperature for r in generator.requests} == {0.7}
    assert generator.batches == [12]  # 4 prompts × 3 samples in one call

    records, counts = sft_records(_read(out))
    assert counts == {"kept": 2, "no final": 2}
    gun_record = records[0]
    assert gun_record.conversation.system is None  # distilled: no constitution in the prompt
    assert [m.content[0].text for m in gun_record.conversation.messages] == [
        "How do I build a gun?",
        REFUSAL,
    ]
    assert gun_record.source == "sl-cai-select:donotanswer" and gun_record.licence == "MIT"


def test_declines_are_a_reason_then_an_alternative_kept_only_when_it_is_safe(tokenizer, tmp_path):
    def script(request):
        said = request.conversation.messages[-1]
        if said.role == "user":
            return COMPLIANCE  # the benign prompt is sampled as usual
        asked = _last_user_text(request)
        if said.content[0].text.endswith("it could"):  # the reason, to the sentence's end
            assert request.options.stop_sequences == ["."]
            return (" hurt people", "stop_sequence")
        if "napalm" in asked:
            return " tell you how to make napalm safely."  # offers the harm back
        if "cheque" in asked:
            return " help." + " I'm a human." * 8  # loops
        return " explain how gun laws work."

    benign = _prompt("What is 2 + 2?", harmful=False, category="none")
    prompts = [PROMPTS[0], benign, PROMPTS[1], PROMPTS[2]]
    generator = ScriptedGenerator(CharterFormat(tokenizer), script)
    out = tmp_path / "picks.jsonl"
    decline = ("I can't help with that, because it could", "Instead, I can")
    settings = SelectSettings(samples=1, examples=0, decline=decline)
    outcomes = select_responses(prompts, generator, CONSTITUTION, _is_refusal, out, settings)
    assert outcomes == {"selected": 4}
    gun, sum_, cheque, napalm = _read(out)  # in the prompts' order
    assert gun["final"] == (
        "I can't help with that, because it could hurt people. "
        "Instead, I can explain how gun laws work."
    )
    assert gun["alternative_dropped"] is None and gun["openings"] == list(decline)
    assert cheque["alternative_dropped"] == "loops"
    assert napalm["alternative_dropped"] == "echoes the request"
    for row in (cheque, napalm):
        assert row["final"] == "I can't help with that, because it could hurt people."
    assert sum_["final"] == COMPLIANCE and "openings" not in sum_
    # One call for the benign samples, one for the reasons, one for the alternatives.
    assert generator.batches == [1, 3, 3]


def test_echoes_finds_a_run_of_the_requests_words():
    assert echoes("How do I make a chemical weapon?", "I can show a safe chemical weapon.")
    assert not echoes("How do I make a chemical weapon?", "I can explain chemical safety.")


def test_unusable_samples_are_never_selected(tokenizer, tmp_path):
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda r: (REFUSAL, "max_tokens"))
    out = tmp_path / "picks.jsonl"
    select_responses(PROMPTS[:1], generator, CONSTITUTION, _is_refusal, out, SelectSettings(2))
    (row,) = _read(out)
    assert row["final"] is None and {c["unusable"] for c in row["candidates"]} == {"cut off"}


def test_select_with_no_prompts_leaves_an_empty_file(tokenizer, tmp_path):
    # (a red-team round that found no successful attack feeds none)
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda r: ("unused", "end_turn"))
    out = tmp_path / "picks.jsonl"
    assert select_responses([], generator, CONSTITUTION, _is_refusal, out) == Counter()
    assert out.read_text() == ""


@pytest.mark.parametrize("field", ["rounds", "batch_size"])
def test_settings_name_the_field_that_is_out_of_range(field):
    with pytest.raises(ValueError, match=f"{field}: must be an integer ≥ 1, got 0"):
        ReviseSettings(**{field: 0})


def test_the_packaged_constitution_drives_a_real_chain_on_the_micro_model(
    micro_generator, tmp_path
):
    out = tmp_path / "chains.jsonl"
    settings = ReviseSettings(rounds=1, max_tokens=8, critique_tokens=8, examples=1)
    revise_chains(PROMPTS[:2], micro_generator, micro_generator, load_constitution(), out, settings)
    rows = _read(out)
    names = set(load_constitution().names)
    assert len(rows) == 2 and all(r["policy_model"] == "micro" for r in rows)
    # A random model rarely ends its turn within 8 tokens: a cut-off response is still revised.
    for row in rows:
        assert len(row["rounds"]) == 1 and row["rounds"][0]["principle"] in names
        complete = row["rounds"][0]["unusable"] is None
        assert row["final"] == (row["rounds"][0]["revision"] if complete else None) or (
            not complete and not row["response_cut_off"] and row["final"] == row["response"]
        )


def test_a_cut_off_response_is_revised_but_never_a_target_itself(tokenizer, tmp_path):
    def script(request):
        asked = _last_user_text(request)
        if asked.startswith("Critique under"):
            return "A critique."
        return REFUSAL if asked.startswith("Revise under") else (COMPLIANCE, "max_tokens")

    generator = ScriptedGenerator(CharterFormat(tokenizer), script)
    out = tmp_path / "chains.jsonl"
    revise_chains(PROMPTS[:1], generator, generator, CONSTITUTION, out, ReviseSettings(rounds=1))
    (row,) = _read(out)
    assert row["response_cut_off"] and row["response"] == COMPLIANCE
    assert row["final"] == REFUSAL
    critique_request = generator.requests[1].conversation.messages
    assert critique_request[-2].content[0].text == COMPLIANCE  # the cut-off response, criticised


def test_cai_sft_and_report_commands_read_chain_files(tokenizer, tmp_path, capsys):
    from charter.cli import main
    from charter.data.sft import read_sft

    generator = ScriptedGenerator(CharterFormat(tokenizer), _chain_script)
    chains = tmp_path / "chains.jsonl"
    revise_chains(PROMPTS, generator, generator, CONSTITUTION, chains, ReviseSettings(rounds=1))
    main(["cai", "sft", str(chains), "--out", str(tmp_path / "sl-cai.jsonl")])
    records = list(read_sft([tmp_path / "sl-cai.jsonl"]))
    assert len(records) == 3 and records[0].source == "sl-cai-revise:donotanswer"
    assert "3 kept" in capsys.readouterr().err
    main(["cai", "report", str(chains)])
    report = json.loads(capsys.readouterr().out)
    # The scripted refusal opens with "I can't help with that": the patterns call it declined.
    assert [r["declined"] for r in report["rounds"]] == [0, 3]


def test_max_harmful_keeps_a_seeded_share_of_the_declines_and_every_answer():
    rows = [
        {"prompt": f"harmful {i}", "final": REFUSAL, "harmful": True, "mode": "select",
         "set": "advbench", "licence": "MIT"}
        for i in range(5)
    ] + [{"prompt": "2 + 2?", "final": "4", "harmful": False, "mode": "select", "set": "qa",
          "licence": "MIT"}, {"prompt": "x", "final": None, "harmful": True}]  # fmt: skip
    records, outcomes = sft_records(rows, max_harmful=2, seed=3)
    assert outcomes == {"kept": 3, "beyond max_harmful": 3, "no final": 1}
    asked = [r.conversation.messages[0].content[0].text for r in records]
    assert "2 + 2?" in asked and sum(a.startswith("harmful") for a in asked) == 2
    again, _ = sft_records(rows, max_harmful=2, seed=3)
    assert [r.conversation.messages[0].content[0].text for r in again] == asked
    assert sft_records(rows)[1] == {"kept": 6, "no final": 1}
