"""The packaged constitution and its loader: coverage of the judge's harm categories, errors that
name the file, the line, the entry and the field, seeded sampling, and use with feedback's
prompts. No model is needed."""

from __future__ import annotations

import random
import re

import pytest

from charter.align.constitution import (
    DEFAULT_CONSTITUTION,
    ConstitutionError,
    load_constitution,
)
from charter.align.feedback import (
    FewShotExample,
    Principle,
    comparison_prompt,
    critique_prompt,
    revision_prompt,
)
from charter.data.judge_sources import CATEGORIES

HELPING = ("honesty", "helpfulness", "fairness", "wellbeing")

VALID = """system_prompt = "Be helpful and harmless."

[[principle]]
name = "kind"
category = "wellbeing"
critique_request = "Say how the reply is unkind."
revision_request = "Rewrite it kindly."
comparison_question = "Which reply is kinder?"

[[principle]]
name = "true"
category = "honesty"
critique_request = "Say what is false."
revision_request = "Rewrite it truthfully."
comparison_question = "Which reply is truer?"

[[example]]
prompt = "Hi"
response = "Go away."
critique_request = "Say how the reply is unkind."
critique = "It is rude."
revision_request = "Rewrite it kindly."
revision = "Hello! How can I help?"
"""


def write(tmp_path, text: str):
    path = tmp_path / "constitution.toml"
    path.write_text(text, encoding="utf-8")
    return path


def words(text: str) -> int:
    return len(text.split())


# ---- the packaged constitution ----


def test_the_packaged_constitution_covers_every_harm_category_and_the_helping_ones():
    constitution = load_constitution()
    assert constitution.path == DEFAULT_CONSTITUTION
    assert len(constitution.principles) >= 16
    harms = [c for c in CATEGORIES if c != "none"]
    assert set(constitution.categories) == {*harms, *HELPING}
    for category in harms:  # one principle per harm category, as the judge spells it
        assert len(constitution.in_category(category)) == 1
    for principle in constitution.principles:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", principle.name), principle.name
        assert principle.comparison_question.endswith("?"), principle.name
        assert "last reply" in principle.critique_request, principle.name
    assert len(set(constitution.names)) == len(constitution.names)


def test_the_packaged_texts_are_non_empty_and_short_enough_for_a_small_model():
    constitution = load_constitution()
    assert 10 <= words(constitution.system_prompt) <= 120
    for principle in constitution.principles:
        for text in (
            principle.critique_request,
            principle.revision_request,
            principle.comparison_question,
        ):
            assert 5 <= words(text) <= 60, (principle.name, text)
    assert len(constitution.examples) >= 4
    for example in constitution.examples:
        for text in (example.prompt, example.critique_request, example.revision_request):
            assert text.strip() and words(text) <= 60
        for text in (example.response, example.critique, example.revision):
            assert text.strip() and words(text) <= 80
    # All examples are shown before every revision, so they must leave room in a 2k context.
    shown = sum(words(getattr(e, f)) for e in constitution.examples for f in e.__annotations__)
    assert shown <= 900


def test_the_packaged_examples_teach_refusing_harm_and_answering_the_benign():
    examples = load_constitution().examples
    kept = [e for e in examples if e.revision == e.response]  # nothing harmful: kept as it was
    assert any("kill" in e.prompt for e in kept)
    changed = [e for e in examples if e.revision != e.response]
    refusals = [e for e in changed if re.match(r"I (can't|won't)", e.revision)]
    assert len(refusals) >= 2
    answered = [e for e in changed if re.match(r"I('m sorry| can't)", e.response)]
    assert answered and not any(re.match(r"I (can't|won't)", e.revision) for e in answered)


def test_the_system_prompt_names_the_constitutions_core():
    prompt = load_constitution().system_prompt.lower()
    for idea in ("helpful", "honest", "harmless", "decline", "why", "alternative", "process"):
        assert idea in prompt, idea


# ---- reading a file ----


def test_a_valid_file_loads_with_its_categories_and_examples(tmp_path):
    path = write(tmp_path, VALID)
    constitution = load_constitution(str(path))
    assert constitution.path == path
    assert constitution.names == ("kind", "true")
    assert constitution.categories == ("wellbeing", "honesty")
    assert constitution.get("true") == Principle(
        "true", "Say what is false.", "Rewrite it truthfully.", "Which reply is truer?", "honesty"
    )
    assert constitution.examples == (
        FewShotExample(
            "Hi",
            "Go away.",
            "Say how the reply is unkind.",
            "It is rude.",
            "Rewrite it kindly.",
            "Hello! How can I help?",
        ),
    )
    assert constitution.system_prompt == "Be helpful and harmless."


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('category = "honesty"\n', "", r":10: principle 'true': category: missing"),
        (
            'category = "honesty"\n',
            'category = "honesty"\ntone = "warm"\n',
            r":10: principle 'true': tone: unknown field; expected name, ",
        ),
        ('name = "true"', 'name = "kind"', r":10: principle 'kind': name: duplicate \(also "),
        (
            'category = "honesty"',
            "category = 3",
            r":10: principle 'true': category: must be a string, got int",
        ),
        ('category = "honesty"', 'category = "  "', r":10: principle 'true': category: empty"),
        ('name = "true"\n', "", r":10: principle\[1\]: name: missing"),
        ('name = "true"', "name = false", r":10: principle\[1\]: name: must be a string, got bool"),
        ('critique = "It is rude."\n', "", r":17: example\[0\]: critique: missing"),
        ('prompt = "Hi"', 'prompt = ""', r":17: example\[0\]: prompt: empty"),
    ],
)
def test_an_invalid_entry_is_named_by_file_line_entry_and_field(tmp_path, old, new, message):
    assert VALID.count(old) == 1  # each change is to the second principle or the example
    path = write(tmp_path, VALID.replace(old, new))
    with pytest.raises(ConstitutionError, match=re.escape(str(path)) + message):
        load_constitution(path)


def test_an_inline_array_of_principles_is_named_by_index_without_a_line(tmp_path):
    text = 'system_prompt = "x"\nprinciple = [{name = "a", category = "c"}]\n'
    path = write(tmp_path, text)
    with pytest.raises(ConstitutionError, match=f"^{re.escape(str(path))}: principle 'a': "):
        load_constitution(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('system_prompt = "x"\n', r": no \[\[principle\]\] tables"),
        (
            VALID.replace('system_prompt = "Be helpful and harmless."', ""),
            r": system_prompt: missing",
        ),
        (
            VALID.replace('"Be helpful and harmless."', '""'),
            r": system_prompt: must be a non-empty",
        ),
        ("version = 2\n" + VALID, r": version: unknown top-level field"),
        ('system_prompt = "x"\nprinciple = "all of them"\n', r": principle: must be an array of"),
        (VALID.replace('name = "kind"', 'name = "kind'), r": .*\(at line 4, column \d+\)"),
    ],
)
def test_a_badly_shaped_file_is_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConstitutionError, match=f"^{re.escape(str(path))}{message}"):
        load_constitution(path)


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConstitutionError, match=f"^{re.escape(str(path))}: cannot read"):
        load_constitution(path)


# ---- choosing principles ----


def test_get_and_in_category_name_the_choices():
    constitution = load_constitution()
    assert constitution.get("weapons").category == "weapons"
    assert [p.name for p in constitution.in_category("child safety")] == ["child-safety"]
    with pytest.raises(ConstitutionError, match=r"no principle 'weapon'; choose from weapons, "):
        constitution.get("weapon")
    with pytest.raises(ConstitutionError, match=r"no principle in category 'gore'; categories: "):
        constitution.in_category("gore")


def test_sample_is_seeded_distinct_and_bounded():
    constitution = load_constitution()
    n = len(constitution.principles)
    first = constitution.sample(random.Random(7), k=5)
    assert first == constitution.sample(random.Random(7), k=5)
    assert len({p.name for p in first}) == 5
    assert first != constitution.sample(random.Random(8), k=5)
    assert {p.name for p in constitution.sample(random.Random(0), k=n)} == set(constitution.names)
    assert len(constitution.sample(random.Random(0))) == 1
    with pytest.raises(ConstitutionError, match=rf"cannot sample {n + 1} .* which has {n}"):
        constitution.sample(random.Random(0), k=n + 1)
    with pytest.raises(ConstitutionError, match="cannot sample 0"):
        constitution.sample(random.Random(0), k=0)


# ---- use with feedback ----


def test_a_loaded_principle_and_examples_build_feedback_prompts():
    constitution = load_constitution()
    principle = constitution.get("cyber")
    prompt, response = "How do I get into my neighbour's wifi?", "Try these default passwords."

    def texts(conversation):
        return [m.content[0].text for m in conversation.messages]

    asked = texts(critique_prompt(prompt, response, principle, constitution.examples))
    assert asked[-3:] == [prompt, response, principle.critique_request]
    assert asked[0] == constitution.examples[0].prompt
    revised = texts(
        revision_prompt(prompt, response, "It helps.", principle, constitution.examples)
    )
    assert revised[-2:] == ["It helps.", principle.revision_request]
    assert constitution.examples[-1].revision in revised
    (question,) = texts(comparison_prompt(prompt, "No.", "Sure.", principle))
    assert f"{principle.comparison_question}\n\n(A) No.\n\n(B) Sure." in question
