"""Training with LLM-written negatives (`hardneg train --negatives mined|generated|both|generated-else-mined
--generated DIR`):
the table rows hold each query's own generated passages in its negative slots (instead of the mined
ones, or after them), queries short of any are left out, the default leaves today's table and
settings key as they were, and a few real steps train the packaged static model; then the same through
the installed command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fake_llm import FakeLLM
from safetensors.torch import load_file
from typer.testing import CliRunner

import hardneg
from hardneg.cli import app
from hardneg.collection import Collection, load_beir
from hardneg.errors import ConfigError, HardnegWarning
from hardneg.generation.negatives import generate_negatives
from hardneg.training.config import TrainConfig
from hardneg.training.trainer import training_table

DROP = "cell"  # the fake judge finds passages about cells relevant: those are dropped


def write(prompt: str, seed: int) -> str:
    q = prompt.rsplit("Query:", 1)[-1].split("\n", 1)[0].strip()
    return f" A survey of the words in '{q}' written in {1900 + seed % 100} by several groups."


@pytest.fixture(scope="module")
def setup(slice_dir, tmp_path_factory):
    """A BM25 run (2 negatives) on the SciFact slice and two generated negatives per query, judged by the
    fake LLM (which drops every passage about cells: those queries are short of generated negatives)."""
    tmp = tmp_path_factory.mktemp("gen-train")
    fake = FakeLLM(write=write, answer=lambda p: 0.9 if DROP in p.lower() else 0.1)
    gen = generate_negatives(dataset=str(slice_dir), llm=fake.url, per_query=2, llm_judge=f"llm:{fake.url}",
                             cache_dir=str(tmp / "c"), out=str(tmp / "gen"))
    run = hardneg.mine(str(slice_dir), teacher="bm25", num_negatives=2, cache_dir=str(tmp / "c"),
                       out=str(tmp / "run"))
    yield run, gen, tmp
    fake.close()


def _query_ids(run, anchors):
    col = run.collection()
    by_text = {t: q for q, t in zip(col.query_ids.tolist(), col.query_texts)}
    return [by_text[a] for a in anchors]


def test_generated_and_both_fill_the_slots_with_each_querys_own_passages(setup):
    run, gen, _ = setup
    prov = gen.provenance.to_pylist()
    own = {}  # query id -> its kept passages, in slot order
    for r in prov:
        if r["kept"]:
            own.setdefault(r["query_id"], []).append(r["text"])
    short = {r["query_id"] for r in prov} - {q for q, t in own.items() if len(t) == 2}
    assert short and own  # some queries lost a passage to the judge
    mined = training_table(run, "mnrl-hn")
    with pytest.warns(HardnegWarning, match=f"{len(short)} of the run's 30 queries left out"):
        t = training_table(run, "mnrl-hn", negatives="generated", generated=str(gen.path))
    assert t.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    rows = t.to_pylist()
    qids = _query_ids(run, [r["anchor"] for r in rows])
    assert not set(qids) & short and len(set(qids)) == 30 - len(short)
    for q, r in zip(qids, rows):  # its own passages, in slot order; never another query's
        assert [r["negative_1"], r["negative_2"]] == own[q]
    mined_rows = {(r["anchor"], r["positive"]): r for r in mined.to_pylist()}
    with pytest.warns(HardnegWarning, match="left out"):
        both = training_table(run, "mnrl-hn", negatives="both", generated=str(gen.path)).to_pylist()
    assert len(both) == len(rows)
    for q, r in zip(_query_ids(run, [r["anchor"] for r in both]), both):
        m = mined_rows[(r["anchor"], r["positive"])]
        assert [r["negative_1"], r["negative_2"]] == [m["negative_1"], m["negative_2"]]  # mined first
        assert [r["negative_3"], r["negative_4"]] == own[q]                               # then its own
    with pytest.warns(HardnegWarning):  # one generated slot: queries with a first passage kept
        one = training_table(run, "mnrl-hn", num_negatives=1, negatives="generated", generated=str(gen.path))
    assert one.column_names[-1] == "negative_1" and one.num_rows >= t.num_rows
    assert set(one.column("negative_1").to_pylist()) <= {p for ps in own.values() for p in ps}
    # the generated passages are no document of the run
    docs = set(run.collection().doc_texts)
    assert not docs & set(t.column("negative_1").to_pylist() + t.column("negative_2").to_pylist())


def test_generated_else_mined_keeps_every_query_and_falls_back_slot_by_slot(setup):
    """Filtered LLM negatives at equal queries: a slot whose passage the judge dropped holds the query's mined
    negative of that slot, so the rows are mined's rows (no query left out), the kept passages stay in place."""
    run, gen, _ = setup
    own: dict[str, dict[int, str]] = {}  # query id -> slot -> its kept passage
    for r in gen.provenance.to_pylist():
        if r["kept"]:
            own.setdefault(r["query_id"], {})[r["sample"]] = r["text"]
    mined = training_table(run, "mnrl-hn").to_pylist()
    with pytest.warns(HardnegWarning, match=r"slots hold the mined negative") as caught:
        t = training_table(run, "mnrl-hn", negatives="generated-else-mined", generated=str(gen.path))
    assert not [w for w in caught if "left out" in str(w.message)]
    assert t.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    rows = t.to_pylist()
    assert [(r["anchor"], r["positive"]) for r in rows] == [(r["anchor"], r["positive"]) for r in mined]
    qids = _query_ids(run, [r["anchor"] for r in rows])
    for q, r, m in zip(qids, rows, mined):
        for j in (0, 1):
            slot = f"negative_{j + 1}"
            assert r[slot] == (own[q][j] if j in own.get(q, {}) else m[slot])
    fell = sum(2 - len(own.get(q, {})) for q in set(qids))
    assert 0 < fell < 2 * len(set(qids))
    assert f"{fell} of {2 * len(set(qids))} slots hold the mined negative" in str(caught[0].message)


def test_generated_else_mined_needs_a_mined_negative_for_every_slot(setup, slice_dir):
    _, gen, tmp = setup
    one = hardneg.mine(str(slice_dir), teacher="bm25", num_negatives=1, cache_dir=str(tmp / "c"), out=str(tmp / "run1"))
    with pytest.raises(ConfigError, match="2 slots, but the run mined 1 per query to fall back on"):
        training_table(one, "mnrl-hn", negatives="generated-else-mined", generated=str(gen.path))
    with pytest.warns(HardnegWarning, match="slots hold the mined negative"):
        t = training_table(one, "mnrl-hn", num_negatives=1, negatives="generated-else-mined", generated=str(gen.path))
    assert t.column_names[-1] == "negative_1" and t.num_rows == training_table(one, "mnrl-hn").num_rows


def test_the_default_is_unchanged_and_the_switches_are_checked(setup, tmp_path):
    run, gen, _ = setup
    cfg = TrainConfig(run="r", out="o")
    assert cfg.negatives == "mined" and not {"negatives", "generated"} & set(cfg.fingerprint_settings())
    assert training_table(run, "mnrl-hn", negatives="mined").equals(training_table(run, "mnrl-hn"))
    for kwargs, msg in [({"negatives": "generated"}, "give --generated"),
                        ({"negatives": "mined", "generated": str(gen.path)}, "only with --negatives generated"),
                        ({"negatives": "some", "generated": str(gen.path)}, "unknown source"),
                        ({"negatives": "both", "generated": str(tmp_path)}, "not a generated-negatives folder")]:
        with pytest.raises(ConfigError, match=msg):
            hardneg.train(run, tmp_path / "m", loss="mnrl-hn", max_steps=1, progress=False, **kwargs)
    with pytest.raises(ConfigError, match="loss 'margin-mse' needs"):
        hardneg.train(run, tmp_path / "m", loss="margin-mse", negatives="both", generated=str(gen.path), max_steps=1,
                      progress=False)
    # negatives written for other data (a query's text differs): refused, naming the query
    col = run.collection()
    texts = list(col.query_texts)
    texts[0] = "an entirely different question"
    other = Collection(col.doc_ids, col.doc_texts, col.query_ids, texts, col.qrels)
    moved = hardneg.mine(other, teacher="bm25", num_negatives=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match=f"query '{col.query_ids[0]}' was"):
        training_table(moved, "mnrl-hn", negatives="generated", generated=str(gen.path))


def test_three_real_steps_with_generated_and_both(setup, static_model, tmp_path):
    run, gen, _ = setup
    tiny = {"model": static_model, "batch_size": 4, "max_steps": 3, "warmup_ratio": 0.0, "progress": False}
    before = load_file(str(Path(static_model) / "model.safetensors"))
    seen = {}
    for mode in ("generated", "both"):
        with pytest.warns(HardnegWarning, match="left out"):
            out = hardneg.train(run, tmp_path / mode, loss="mnrl-hn", negatives=mode, generated=str(gen.path), **tiny)
        m = json.loads((out / "hardneg_train.json").read_text())
        assert m["steps"] == 3 and m["config"]["negatives"] == mode
        assert m["run"]["generated"]["fingerprint"] == gen.manifest["fingerprint"]
        after = load_file(str(out / "model.safetensors"))
        assert any(not (before[k] == after[k]).all() for k in before)
        seen[mode] = m
    assert seen["generated"]["columns"][-1] == "negative_2" and seen["both"]["columns"][-1] == "negative_4"
    assert seen["generated"]["fingerprint"] != seen["both"]["fingerprint"]


def test_generate_then_train_both_through_the_installed_cli(setup, slice_dir, static_model, tmp_path, hardneg_exe):
    """generate negatives -> train --negatives both through the `hardneg` command; the old spelling
    `train --negatives RUN` still names the run (test_train_experiment trains with it)."""
    run, _, tmp = setup
    fake = FakeLLM(write=write, answer=lambda p: 0.1)
    env = {**os.environ, "COLUMNS": "200"}
    gen = tmp_path / "gen"
    try:
        g = subprocess.run([hardneg_exe, "generate", "negatives", "--dataset", str(slice_dir), "--llm", fake.url,
                            "--per-query", "1", "--with-positive", "--judge", f"llm:{fake.url}", "--cache-dir",
                            str(tmp / "c"), "--out", str(gen)], capture_output=True, text=True, timeout=120, env=env,
                           check=False)
    finally:
        fake.close()
    assert g.returncode == 0, g.stderr
    assert "generate: 30 requests, 0 in the cache" in g.stderr and "kept" in g.stdout and "30 (30 queries)" in g.stdout
    common = ["--out", str(tmp_path / "m"), "--model", static_model, "--batch-size", "4", "--max-steps", "2",
              "--warmup-ratio", "0", "--quiet"]
    t = subprocess.run([hardneg_exe, "train", "--run", str(run.path), "--negatives", "both", "--generated", str(gen),
                        *common], capture_output=True, text=True, timeout=180, env=env, check=False)
    assert t.returncode == 0, t.stderr
    m = json.loads((tmp_path / "m" / "hardneg_train.json").read_text())
    assert m["config"]["negatives"] == "both" and m["columns"][-1] == "negative_3" and m["steps"] == 2
    runner = CliRunner()
    old = runner.invoke(app, ["train", "--negatives", str(tmp_path / "no-run"), *common])  # --run's old name
    assert old.exit_code == 2 and "no-run" in old.output
    bad = runner.invoke(app, ["train", "--negatives", "both", *common])
    assert bad.exit_code == 2 and "give --run" in bad.output
    assert load_beir(slice_dir, "train").query_ids.size == 30


def test_an_experiment_variant_takes_them_as_training_options(tmp_path):
    """`train: {negatives: both, generated: DIR}` in an experiment's variant reaches TrainConfig (the cell
    trains with budget | variant.train) and into the model's settings key."""
    from hardneg.experiment.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate({"dataset": "d", "variants": [
        {"name": "both", "train": {"negatives": "both", "generated": str(tmp_path)}}]})
    v = cfg.variants[0]
    tc = TrainConfig(run="r", out="o", loss=v.loss, **(cfg.budget.model_dump() | v.budget | v.train))
    assert tc.negatives == "both" and tc.generated == str(tmp_path) and tc.fingerprint_settings()["negatives"] == "both"

