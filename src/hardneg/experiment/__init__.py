"""Experiments: a grid of mining variants, mined, trained and evaluated with one budget, and its report."""
