"""`charter ppo`: PPO with a KL penalty against a reward model (`charter.train.ppo`).

    charter ppo --policy runs/sl-cai/final --reward runs/rm/final \\
        --prompts cache/cai/redteam.jsonl cache/cai/helpful.jsonl --out runs/ppo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.train.settings import add_settings_arguments


def run(args: argparse.Namespace) -> None:
    from charter.data.prompt_sets import read_prompt_file
    from charter.train.ppo import train_ppo
    from charter.train.settings import load_settings

    prompts = [p.text for path in args.prompts for p in read_prompt_file(path)]
    settings = load_settings(args.config, args.set)
    train_ppo(args.policy, args.reward, prompts, args.out, settings, args.reference)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, type=Path, help="the policy to train")
    parser.add_argument("--reward", required=True, type=Path, help="a reward model (charter rm)")
    parser.add_argument(
        "--prompts", required=True, nargs="+", type=Path, help="prompt files (charter cai prompts)"
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--reference", type=Path, help="the KL's reference policy (default: --policy)"
    )
    add_settings_arguments(parser, "[train], [ppo]", "ppo.iterations=40 ppo.kl_target=4")
    parser.set_defaults(func=run)
