"""Seeds: ``--seed`` reaches every sampler that draws (another seed, other negatives), and one seed
gives the same bytes in a fresh process with a fresh cache, for every sampler, through the
installed ``hardneg`` command (BM25 on the SciFact slice, so it is fast)."""

from __future__ import annotations

import os
import subprocess

import pyarrow.parquet as pq
import pytest

import hardneg

SAMPLERS = ("top", "window:3-25", "random", "simans", "top1+sampled")
DRAWS = {"random", "simans", "top1+sampled"}  # top and window take ranks in order: no draw
COMMON = {"teacher": "bm25", "filter": "percpos:0.95", "num_negatives": 4, "depth": 30}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_seed_reaches_the_sampler_and_a_fresh_process_gives_the_same_bytes(sampler, slice_dir, hardneg_exe,
                                                                          tmp_path):
    runs = {seed: hardneg.mine(str(slice_dir), sampler=sampler, seed=seed, cache_dir=str(tmp_path / "c1"),
                               out=str(tmp_path / f"seed{seed}"), **COMMON) for seed in (0, 1)}
    kept = runs[0].candidates.filter(runs[0].candidates.column("kept")).group_by("query_id").aggregate(
        [("doc_id", "count")]).column("doc_id_count").to_pylist()
    assert min(kept) > 2 * COMMON["num_negatives"]  # far more kept candidates than negatives: a draw matters
    a, b = (runs[s].negatives.column("negative_ids").to_pylist() for s in (0, 1))
    changed = sum(x != y for x, y in zip(a, b))
    if sampler in DRAWS:
        assert changed >= 0.8 * len(a), f"seed 1 changed only {changed} of {len(a)} queries' negatives"
    else:
        assert changed == 0

    cmd = [hardneg_exe, "mine", "--dataset", str(slice_dir), "--teacher", "bm25", "--filter", "percpos:0.95",
           "--sampler", sampler, "--num-negatives", "4", "--depth", "30", "--seed", "0",
           "--cache-dir", str(tmp_path / "c2"), "--out", str(tmp_path / "fresh"), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}  # a fresh hash seed too
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_metadata(tmp_path / "fresh" / "negatives.parquet").num_rows == len(a)
    for f in ("negatives.parquet", "candidates.parquet"):
        assert (tmp_path / "fresh" / f).read_bytes() == (tmp_path / "seed0" / f).read_bytes(), f


def _flat(d: object, prefix: str = "") -> dict[str, object]:
    if isinstance(d, dict):
        out: dict[str, object] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): d}


# What the README says may differ between two manifests of the same inputs and seed: when and how fast,
# and what the caches saved.
MAY_VARY = {"created", "counts.encoded_texts", "counts.search_cache_hit", "counts.exhaustive_rescans",
            "counts.judge_cache_hits", "llm_judge.calls", "llm_judge.cache_hits"}


def test_a_warm_rerun_changes_only_time_and_cache_counters_in_the_manifest(slice_dir, static_model, tmp_path):
    """The same run mined cold, then again over its warm cache (``overwrite``): the parquet bytes are
    equal, and the manifest differs only in the fields the README lists."""
    kw = {"teacher": f"dense:{static_model}", "filter": "percpos:0.95", "sampler": "random", "num_negatives": 4,
          "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "run")}
    cold = hardneg.mine(str(slice_dir), **kw)
    first = {f: (tmp_path / "run" / f).read_bytes() for f in ("negatives.parquet", "candidates.parquet")}
    warm = hardneg.mine(str(slice_dir), overwrite=True, **kw)
    assert {f: (tmp_path / "run" / f).read_bytes() for f in first} == first
    a, b = _flat(cold.manifest), _flat(warm.manifest)
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k] and not k.startswith("timings.")}
    assert differ <= MAY_VARY, differ - MAY_VARY
    assert "counts.encoded_texts" in differ  # the cache really was used the second time
