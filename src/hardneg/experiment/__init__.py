"""Experiments: a grid of mining variants, mined, trained and evaluated with one budget (config, cells,
driver), its results table (results) and its HTML report (report)."""
