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
