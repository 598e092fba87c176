"""Red-teaming: attacks made from harmful seed requests by strategies, sent to any `Generator`,
judged, and stored as findings; successful training attacks feed the next alignment round.

    strategies.py  attack strategies: a seed request → the user turns of an attack
    run.py         a round: attacks sent, judged and stored; the training feed; ASR tables
    findings.py    the SQLite findings database and attack success rates
"""
