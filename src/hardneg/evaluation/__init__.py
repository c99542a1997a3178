"""Evaluation: metrics of a ranking (pytrec_eval semantics), retrieval over a corpus, paired comparison."""
