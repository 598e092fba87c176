"""Red-teaming: attacks made from harmful seed requests by strategies, sent to any `Generator`,
judged, and stored as findings; successful training attacks feed the next alignment round.

    findings.py   the SQLite findings database and attack success rates
"""
