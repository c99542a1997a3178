"""GPL's pseudo-labels (Wang et al., NAACL 2022, arXiv:2112.07577): a cross-encoder as a `--score-with`
member writes, for every candidate, positive and negative of a run, exactly what its own predict()
gives (raw logits); margin-mse trains on them; and the recipe generate queries -> mine -> score with
the cross-encoder -> train margin-mse runs through the installed command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_llm import FakeLLM
from safetensors.torch import load_file

import hardneg
from hardneg.errors import ConfigError
from hardneg.generation import generate_queries
from hardneg.runs.columns import flat, list_matrix
from hardneg.training.trainer import training_table


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    """A real one-logit CrossEncoder folder: the packaged MiniLM with a seeded fresh head (no reranker
    ships offline; `hardneg train-judge` trains one the same way)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from hardneg.runs.fingerprint import default_model_path

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ce") / "ce"
    CrossEncoder(default_model_path(), num_labels=1, max_length=96).save(str(folder))
    return folder


@pytest.fixture(scope="module")
def gpl_run(scifact_slice, cross_encoder, tmp_path_factory):
    small = scifact_slice.slice(10, extra_docs=40, seed=1)
    tmp = tmp_path_factory.mktemp("gpl")
    return hardneg.mine(small, teacher="bm25", num_negatives=3, depth=6, score_with=f"cross-encoder:{cross_encoder}",
                        cache_dir=str(tmp / "c"), out=str(tmp / "run")), tmp


def _predict(folder: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    return np.asarray(CrossEncoder(str(folder)).predict(pairs, activation_fn=torch.nn.Identity()), dtype=np.float64)


def test_the_cross_encoder_member_writes_its_own_predictions(gpl_run, cross_encoder):
    run, _ = gpl_run
    name = "cross-encoder_ce"
    assert run.manifest["score_with"][0]["name"] == name and run.manifest["score_with"][0]["scores"] == "raw logits"
    col = run.collection()
    neg = run.negatives
    qids = neg.column("query_id").to_numpy(zero_copy_only=False)
    pairs, got = [], []
    for kind in ("positive", "negative"):
        ids, row = flat(neg, f"{kind}_ids")
        scores, _ = flat(neg, f"{kind}_scores_{name}")
        pairs += [(col.query_texts[q], col.doc_texts[d]) for q, d in
                  zip(col.query_index(qids[row]), col.doc_index(ids))]
        got.append(scores)
    cand = run.candidates
    pairs += [(col.query_texts[q], col.doc_texts[d]) for q, d in
              zip(col.query_index(cand.column("query_id").to_numpy(zero_copy_only=False)),
                  col.doc_index(cand.column("doc_id").to_numpy(zero_copy_only=False)))]
    got.append(cand.column(f"score_{name}").to_numpy())
    got = np.concatenate(got)
    assert got.size == len(pairs) > 40 and np.unique(np.round(got, 6)).size > 10
    np.testing.assert_allclose(got, _predict(cross_encoder, pairs), rtol=1e-5, atol=1e-5)
    # the mining teacher's own scores are still there, and the cross-encoder never chose anything
    assert "negative_scores_bm25" in neg.column_names and run.manifest["config"]["teacher"] == "bm25"


def test_bad_cross_encoder_specs_stop_before_mining(scifact_slice, tmp_path):
    small = scifact_slice.slice(4, extra_docs=10, seed=0)
    with pytest.raises(ConfigError, match="name the model"):
        hardneg.mine(small, teacher="bm25", score_with="cross-encoder:", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="unknown teacher"):
        hardneg.mine(small, teacher="cross-encoder:x", cache_dir=str(tmp_path / "c"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="does not load or score"):
        hardneg.mine(small, teacher="bm25", score_with=f"cross-encoder:{broken}", cache_dir=str(tmp_path / "c"),
                     out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_margin_mse_trains_on_the_cross_encoder_margins(gpl_run, static_model, tmp_path):
    run, _ = gpl_run
    name = "cross-encoder_ce"
    t = training_table(run, "margin-mse", teacher_scores=name, teacher_norm="none")
    label = list_matrix(t, "label")
    full = [r for r in run.negatives.to_pylist() if len(r["negative_ids"]) == 3]
    want = np.array([[p - n for n in r[f"negative_scores_{name}"]] for r in full
                     for p in r[f"positive_scores_{name}"]])
    np.testing.assert_allclose(label, want, rtol=1e-6)
    before = load_file(str(Path(static_model) / "model.safetensors"))
    out = hardneg.train(run, tmp_path / "m", model=static_model, loss="margin-mse", teacher_scores=name,
                        batch_size=4, max_steps=3, warmup_ratio=0.0, progress=False)
    m = json.loads((out / "hardneg_train.json").read_text())
    assert m["steps"] == 3 and m["loss"]["class"] == "MarginMSELoss" and np.isfinite(m["train_loss"])
    after = load_file(str(out / "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)


def test_the_gpl_recipe_through_the_installed_cli(slice_dir, cross_encoder, static_model, tmp_path, hardneg_exe):
    """generate queries -> mine (bm25) scored by the cross-encoder -> train margin-mse on its margins."""
    fake = FakeLLM()
    env = {**os.environ, "COLUMNS": "200"}
    cache = str(tmp_path / "c")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([hardneg_exe, *args], capture_output=True, text=True, timeout=240, env=env, check=False)

    try:  # (`generate queries` itself goes through the command in test_generate.py)
        generate_queries(corpus=str(slice_dir), llm=fake.url, sample_docs=8, roundtrip_teacher="none", cache_dir=cache,
                         out=str(tmp_path / "gen"))
    finally:
        fake.close()
    m = run("mine", "--dataset", str(tmp_path / "gen"), "--teacher", "bm25", "--num-negatives", "2", "--depth", "5",
            "--score-with", f"cross-encoder:{cross_encoder}", "--cache-dir", cache, "--out", str(tmp_path / "run"),
            "--quiet")
    assert m.returncode == 0, m.stderr
    t = run("train", "--run", str(tmp_path / "run"), "--loss", "margin-mse", "--teacher-scores", "cross-encoder_ce",
            "--model", static_model, "--batch-size", "4", "--max-steps", "2", "--warmup-ratio", "0",
            "--out", str(tmp_path / "model"), "--quiet")
    assert t.returncode == 0, t.stderr
    meta = json.loads((tmp_path / "model" / "hardneg_train.json").read_text())
    assert meta["config"]["teacher_scores"] == "cross-encoder_ce" and meta["steps"] == 2
    assert meta["run"]["config"]["score_with"] == f"cross-encoder:{cross_encoder}"
