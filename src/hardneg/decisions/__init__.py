"""Decisions: the rules that keep or drop a candidate (and why), similarity to positives, calibration, and the model judges."""
