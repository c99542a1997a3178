"""A run stands alone: everything its consumers need from the collection comes from the run and its
content-addressed snapshot in the cache, never from the dataset it was mined from."""

import gc
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import hardneg
from hardneg.cli import app
from hardneg.errors import RunError
from hardneg.runs.snapshot import snapshot_dir


def _mine_from_a_dataset_object(scifact_slice, tmp_path):
    """Mine from an in-memory ``datasets.Dataset`` of (anchor, positive) pairs, then drop it."""
    import datasets

    col = scifact_slice
    pos = col.positives()
    ds = datasets.Dataset.from_dict({"anchor": [col.query_texts[q] for q in pos.query_idx.tolist()],
                                     "positive": [col.doc_texts[d] for d in pos.doc_idx.tolist()]})
    run = hardneg.mine(ds, teacher="bm25", num_negatives=2, out=str(tmp_path / "run"),
                       cache_dir=str(tmp_path / "cache"))
    assert run.manifest["config"]["dataset"].startswith("Dataset(")  # a repr: nothing to reload from
    del ds, run
    gc.collect()
    return tmp_path / "run"


def test_a_run_mined_from_a_dataset_object_exports_and_trains_alone(scifact_slice, static_model, tmp_path):
    out = _mine_from_a_dataset_object(scifact_slice, tmp_path)
    run = hardneg.Run.load(out)
    queries = run.negatives.num_rows
    table = pq.read_table(hardneg.export(out, "triplet", tmp_path / "t.parquet"))
    assert table.num_rows > 0 and set(table.column_names) == {"anchor", "positive", "negative"}
    assert hardneg.to_dataset(run, "n-tuple").num_rows > 0
    tev = hardneg.export(run, "tevatron", tmp_path / "tev")
    assert len((tev / "train.jsonl").read_text().splitlines()) == queries
    model = hardneg.train(out, tmp_path / "model", model=static_model, batch_size=4, max_steps=1,
                          warmup_ratio=0.0, progress=False)
    assert json.loads((model / "hardneg_train.json").read_text())["steps"] == 1
    res = CliRunner().invoke(app, ["export", str(out), "--format", "n-tuple", "--out", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) > 0


def test_a_changed_snapshot_is_refused(scifact_slice, tmp_path, monkeypatch):
    monkeypatch.setenv("HARDNEG_CACHE_DIR", str(tmp_path / "other-cache"))  # no second copy to fall back on
    out = _mine_from_a_dataset_object(scifact_slice, tmp_path)
    snap = json.loads((out / "manifest.json").read_text())["data"]["snapshot"]
    docs = snapshot_dir(tmp_path / "cache", snap["qrels_fingerprint"]).resolve() / "docs.parquet"
    table = pq.read_table(docs)
    texts = table.column("text").to_pylist()
    texts[0] = texts[0] + " (edited)"
    pq.write_table(table.set_column(1, "text", pa.array(texts, pa.string())), docs)
    with pytest.raises(RunError, match="does not match its manifest"):
        hardneg.Run.load(out).collection()
    docs.unlink()
    with pytest.raises(RunError, match="not in the cache"):
        hardneg.Run.load(out).collection()


@pytest.mark.parametrize("command", ["train", "train-judge"])
def test_the_run_folder_option_is_run_and_negatives_still_works(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "--run" in res.output and "--negatives" in res.output
    res = CliRunner().invoke(app, [command, "--negatives", "/nonexistent/run", "--out", "/nonexistent/out"])
    assert res.exit_code != 0 and "run folder not found" in res.output
