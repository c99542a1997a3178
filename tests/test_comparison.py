"""Paired comparison (randomisation p, bootstrap CI) on hand-computable cases, and the one results
table model behind results.md and the HTML report."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

from hardneg.evaluation.comparison import (
    compare,
    minimum_detectable_effect,
    paired_bootstrap_ci,
    paired_randomisation,
)
from hardneg.evaluation.retrieval import Evaluation
from hardneg.experiment.config import ExperimentConfig
from hardneg.experiment.report import report
from hardneg.experiment.results import results_markdown, results_table, summarise


def test_identical_systems_differ_by_nothing():
    a = np.random.default_rng(0).random(50)
    c = compare(a, a.copy())
    assert (c.delta, c.ci_low, c.ci_high, c.p, c.n) == (0.0, 0.0, 0.0, 1.0, 50)


def test_a_constant_shift_has_a_point_interval_and_the_smallest_p_for_its_queries():
    a = np.arange(6) / 8  # binary fractions: every difference is exactly 0.25
    c = compare(a + 0.25, a)
    assert (c.delta, c.ci_low, c.ci_high) == (0.25, 0.25, 0.25)
    assert c.p == 2 / 2**6  # exact test: only the all-plus (and all-minus) sign pattern is as extreme
    b = np.arange(20) / 8  # 2^20 patterns > 999 resamples: random sign flips, p = 2 / (999 + 1) at least
    assert paired_randomisation(b - 0.5, b, n=999) == pytest.approx(2 / 1000)
    assert compare(a, a + 0.25).ci_high == -0.25


def test_sign_flips_by_hand():
    # Differences 0.5, 0.5, 0: of the 8 sign patterns, 2 reach +1/3 and 2 reach -1/3.
    assert paired_randomisation([1.0, 1.0, 0.5], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # Differences 1, 2, 3 (mean 2): only +++ and --- reach |mean| >= 2 of 8 patterns.
    assert paired_randomisation([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_the_interval_is_paired_and_seeded():
    rng = np.random.default_rng(1)
    a = rng.random(400)  # queries differ a lot; the systems differ little, query by query
    noise = rng.normal(0.01, 0.02, 400)
    b = a - noise
    low, high = paired_bootstrap_ci(a, b, n=4000, seed=7)
    half = 1.96 * noise.std(ddof=1) / np.sqrt(400)  # the normal interval of the paired mean difference
    assert low < noise.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)  # unpaired would be ~ sqrt(2) * 0.29 / 0.02 x wider
    assert paired_bootstrap_ci(a, b, n=4000, seed=7) == (low, high)
    assert paired_bootstrap_ci(a, b, n=4000, seed=8) != (low, high)
    assert compare(a, b, resamples=4000, seed=7).ci_low == low
    with pytest.raises(ValueError, match="align"):
        compare(a, b[:-1])


def test_the_minimum_detectable_effect_by_hand():
    a, b = np.array([0.6, 0.9, 0.4, 1.0]), np.array([0.5, 0.6, 0.5, 0.5])  # differences 0.1, 0.3, -0.1, 0.5
    sd = np.sqrt(((0.1 - 0.2) ** 2 + 0.1 ** 2 + 0.3 ** 2 + 0.3 ** 2) / 3)
    assert minimum_detectable_effect(a, b) == pytest.approx((1.959964 + 0.841621) * sd / 2, rel=1e-6)
    assert compare(a, b, resamples=99).mde == minimum_detectable_effect(a, b)
    # a stricter test (99%) or more power asks for a larger effect; four times the queries, about half of it
    # (the same differences four times: the sd's ddof=1 goes from 3 to 15, hence sqrt(12 / 15))
    assert minimum_detectable_effect(a, b, confidence=0.99) > minimum_detectable_effect(a, b)
    assert minimum_detectable_effect(a, b, power=0.9) > minimum_detectable_effect(a, b)
    assert minimum_detectable_effect(np.tile(a, 4), np.tile(b, 4)) == pytest.approx(
        minimum_detectable_effect(a, b) / 2 * np.sqrt(12 / 15), rel=1e-9)
    assert minimum_detectable_effect([0.5], [0.4]) == float("inf")


def test_a_true_difference_of_one_mde_is_significant_about_four_times_in_five():
    # 300 queries, per-query differences of spread 0.26 (SciFact test's, refresh vs the ST recipe):
    # draws whose true mean difference is the MDE come out significant at 0.05 with ~80% probability.
    rng = np.random.default_rng(0)
    sd, n = 0.26, 300
    mde = (1.959964 + 0.841621) * sd / np.sqrt(n)
    base = rng.random(n)
    hits = [paired_randomisation(base + d, base, n=999, seed=i) < 0.05
            for i, d in enumerate(rng.normal(mde, sd, (150, n)))]
    assert 0.68 <= np.mean(hits) <= 0.92
    # and the MDE measured on a draw is the one computed from its spread
    d = rng.normal(mde, sd, n)
    assert minimum_detectable_effect(base + d, base) == pytest.approx(mde, rel=0.1)


def _results() -> dict:
    def cell(ndcg: float, spread: float, steps: int, seed: int) -> Evaluation:
        pq = {f"q{i}": float(np.clip(ndcg + spread * np.sin(i + seed), 0, 1)) for i in range(12)}
        return Evaluation({"ndcg@10": float(np.mean(list(pq.values()))), "recall@100": 0.9, "mrr@10": ndcg},
                          {"ndcg@10": pq}, 12, {"train_seconds": 2.0 + seed, "train_steps": steps})
    cfg = ExperimentConfig(dataset="d", baseline="st", permutations=999,
                           variants=[{"name": "st", "kind": "st"}, {"name": "mined<b>"}])
    base = Evaluation({"ndcg@10": 0.5, "recall@100": 0.8, "mrr@10": 0.5},
                      {"ndcg@10": {f"q{i}": 0.5 for i in range(12)}}, 12)
    return summarise(cfg, base, {"st": [cell(0.6, 0.1, 5, 0)], "mined<b>": [cell(0.65, 0.1, 5, 1), cell(0.66, 0.2, 6, 2)]})


def test_results_md_and_the_html_report_show_the_same_table(tmp_path):
    res = _results()
    mined = res["variants"][1]
    assert mined["ci_baseline"][0] <= mined["delta_baseline"] <= mined["ci_baseline"][1]
    assert res["variants"][0]["ci_baseline"] == [0.0, 0.0] and res["variants"][0]["p_vs_baseline"] == 1.0
    table = results_table(res)
    assert "95% CI" in table.headers and "[{:+.4f}, {:+.4f}]".format(*mined["ci_baseline"]) in table.rows[1]
    assert table.rows[1][table.headers.index("MDE")] == f"{mined['mde_baseline']:.4f}" and mined["mde_baseline"] > 0
    # against the base model too (issue 15 (a): fine-tuned on generated queries vs the base model)
    assert 0 < mined["ci_base"][0] <= mined["delta_base"] <= mined["ci_base"][1]
    assert table.rows[1][table.headers.index("Δ base") + 1] == "[{:+.4f}, {:+.4f}]".format(*mined["ci_base"])
    md = results_markdown(res)
    (tmp_path / "results.json").write_text(json.dumps(res))
    page = report(tmp_path).read_text()
    for row in table.rows:
        assert "| " + " | ".join(row) + " |" in md
        assert "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" in page
    assert "<th>" + "</th><th>".join(table.headers) + "</th>" in page
    assert "Unequal budget" in md and "Unequal budget" in page
    assert "mined<b>" not in page  # escaped in HTML


def test_a_table_without_a_baseline_shows_no_baseline_numbers():
    res = _results()
    for r in res["variants"]:
        for k in ("delta_baseline", "ci_baseline", "p_vs_baseline", "mde_baseline"):
            r.pop(k)
    table = results_table(res)
    at = table.headers.index("Δ baseline")
    assert all(row[at:at + 4] == ["-", "-", "-", "-"] for row in table.rows)
