"""Evaluation: retrieve over a corpus and score the ranking with pytrec_eval semantics."""
