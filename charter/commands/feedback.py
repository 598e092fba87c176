"""`charter feedback`: what people gave on the server's feedback pages (`charter serve
--feedback-db PATH`).

    charter feedback export --db runs/feedback.sqlite --out human-prefs.jsonl

writes the /compare page's comparisons as preference JSONL for `charter rm train` (a pick has
`p_chosen` 1; "equally good" has 0.5). The /redteam page's ratings are red-team findings of split
"human" in the same file (charter.align.redteam.findings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_export(args: argparse.Namespace) -> None:
    from contextlib import closing

    from charter.data.comparisons import Comparisons, write_preferences

    if not args.db.exists():
        raise FileNotFoundError(f"{args.db}: feedback database not found")
    with closing(Comparisons(args.db)) as comparisons:
        counts = write_preferences(comparisons.all(), args.out)
    print(
        f"{counts['pairs']} comparisons ({counts['ties']} ties at p_chosen 0.5) → {args.out}",
        file=sys.stderr,
    )


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export", help="the /compare page's comparisons as preference JSONL for charter rm train"
    )
    export.add_argument("--db", required=True, type=Path, help="the server's --feedback-db file")
    export.add_argument("--out", required=True, type=Path, help="the preference JSONL to write")
    export.set_defaults(func=run_export)
