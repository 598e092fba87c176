"""The verb table: every module in charter/commands is named by it, every verb it names is
registered by its module, and every verb and sub-verb has a handler."""

from __future__ import annotations

import argparse
from pathlib import Path

import charter.commands
from charter.commands import VERBS, build_parser

COMMANDS = Path(charter.commands.__file__).parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public view of its sub-commands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_commands_module_is_in_the_verb_table():
    modules = {p.stem for p in COMMANDS.glob("*.py") if p.stem != "__init__"}
    assert modules == {module for module, _ in VERBS.values()}


def test_the_parser_offers_exactly_the_table_s_verbs_each_with_a_handler():
    verbs = _subparsers(build_parser())
    assert list(verbs) == list(VERBS)
    unhandled = []
    for verb, parser in verbs.items():
        leaves = _subparsers(parser) or {"": parser}
        for sub_verb, leaf in leaves.items():
            if not callable(leaf.get_default("func")):
                unhandled.append(f"{verb} {sub_verb}".strip())
    assert unhandled == []
