"""Alignment stages that use a model's own judgement (Constitutional AI) and the pieces they share.

    constitution.py  the principles, few-shot examples and system prompt in constitution.toml
    sl_cai.py     supervised CAI: critique → revision chains, or the small-scale mode (samples under
                  the constitution, the best kept), and the SFT data made from either
    cai_compare.py  RL-CAI: two policy samples per prompt judged under k sampled principles, soft
                  `p_chosen` preference rows (charter.data.preferences reads them back)
    generation_stage.py  what those two share: resuming, per-prompt seeds, unusable turns
    feedback.py   generative feedback through any `Generator`: a critique of a response under a
                  principle, a revision in its light, and a soft preference between two responses
                  (option log-probabilities where the generator can score, sampled votes otherwise)
    judge.py      scoring rows with a trained safety judge (`charter judge score`)
    prompted_judge.py  the same questions put to any `Generator` as yes/no prompts
"""
