"""Alignment stages that use a model's own judgement (Constitutional AI) and the pieces they share.

    feedback.py   generative feedback through any `Generator`: a critique of a response under a
                  principle, a revision in its light, and a soft preference between two responses
                  (option log-probabilities where the generator can score, sampled votes otherwise)
"""
