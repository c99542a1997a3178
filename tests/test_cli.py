"""End-to-end through the CLI on a real SciFact slice: mine, rerun, stats, export, bad input."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from rich.markup import escape
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.config import MineConfig
from hardneg.training.config import TrainConfig

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def test_console_script_mines_a_real_slice(slice_dir, cache_dir, tmp_path, hardneg_exe):
    """The installed `hardneg` command (the venv's console script), as a user runs it."""
    out = tmp_path / "run"
    cmd = [hardneg_exe, "mine", "--dataset", str(slice_dir), "--teacher", "bm25",
           "--filter", "percpos:0.95", "--num-negatives", "4", "--out", str(out), "--cache-dir", str(cache_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["candidates.parquet", "manifest.json", "negatives.parquet"]
    neg = pq.read_table(out / "negatives.parquet")
    assert neg.num_rows == 30
    assert sum(len(x) for x in neg.column("negative_ids").to_pylist()) >= 0.95 * 30 * 4
    assert "coverage" in proc.stdout
    # Progress goes to stderr, as plain lines where stderr is a pipe (stdout stays the command's output; rich
    # bars used to land on stdout, and only their final frame, so a background run logged nothing for hours).
    done = r"^bm25 index: [\d,]+/[\d,]+ \(100%\), \d+:\d\d:\d\d elapsed$"  # the step every bm25 mining takes
    assert re.search(done, proc.stderr, re.MULTILINE), proc.stderr
    assert "100%" not in proc.stdout and "━" not in proc.stdout


def test_mine_rerun_stats_and_config(slice_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = ["mine", "--dataset", str(slice_dir), "--teacher", "dense", "--filter", "percpos:0.95",
            "--sampler", "top1+sampled", "--num-negatives", "3", "--out", str(out), "--cache-dir", str(cache_dir),
            "--quiet"]
    code, text = invoke(*args)
    assert code == 0, text
    first = json.loads((out / "manifest.json").read_text())
    assert first["config"]["sampler"] == "top1+sampled" and first["teacher"]["model"] == "default"

    # The same command again: the finished run is found, nothing is rewritten.
    code, _ = invoke(*args)
    assert code == 0
    assert json.loads((out / "manifest.json").read_text())["created"] == first["created"]

    # Other settings at the same place need --overwrite.
    code, text = invoke(*args[:-1], "--seed", "9")
    assert code == 2 and "already there" in text
    code, text = invoke(*args, "--seed", "9", "--overwrite")
    assert code == 0 and json.loads((out / "manifest.json").read_text())["seed"] == 9

    code, text = invoke("stats", str(out), "--json")
    assert code == 0, text
    s = json.loads(text)
    assert s["counts"]["queries"] == 30 and len(s["histograms"]["positives"]) == 10
    assert sum(s["histograms"]["selected"]) == s["counts"]["selected"]
    code, text = invoke("stats", str(out))
    assert code == 0 and "score histogram" in text

    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"dataset: {slice_dir}\nteacher: bm25\nfilter: margin:0.5\nnum-negatives: 2\n"
                   f"out: {tmp_path / 'run2'}\ncache_dir: {cache_dir}\n")
    code, text = invoke("mine", "--config", str(cfg), "--quiet")
    assert code == 0, text
    m = json.loads((tmp_path / "run2" / "manifest.json").read_text())
    assert m["filters"] == ["margin:0.5"] and m["config"]["num_negatives"] == 2


def test_cli_errors_name_file_and_line(tmp_path, cache_dir):
    root = tmp_path / "bad"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"\n')
    (root / "queries.jsonl").write_text('{"_id": "q", "text": "x?"}\n')
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    out = tmp_path / "run"
    code, text = invoke("mine", "--dataset", str(root), "--teacher", "bm25", "--out", str(out),
                        "--cache-dir", str(cache_dir))
    assert code == 2
    assert "corpus.jsonl:2: malformed JSON" in " ".join(text.split())
    assert not out.exists() and not (tmp_path / ".run.partial").exists()
    code, text = invoke("mine", "--dataset", str(root), "--teacher", "nope", "--out", str(out))
    assert code == 2 and "unknown teacher" in text
    code, text = invoke("mine", "--dataset", str(root), "--filter", "percpos:7", "--out", str(out))
    assert code == 2 and "percpos" in text
    code, text = invoke("stats", str(tmp_path / "missing"))
    assert code == 2 and "run folder not found" in text


def test_export_command(slice_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    code, text = invoke("mine", "--dataset", str(slice_dir), "--teacher", "bm25", "--out", str(out),
                        "--cache-dir", str(cache_dir), "--quiet")
    assert code == 0, text
    code, text = invoke("export", str(out), "--format", "n-tuple", "--out", str(tmp_path / "t.parquet"), "--scores")
    assert code == 0, text
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "negative_4", "score"]
    code, text = invoke("export", str(out), "--format", "n-tuple", "--out", str(tmp_path / "t.parquet"))
    assert code == 2 and "already exists" in text
    code, text = invoke("export", str(out), "--format", "tevatron", "--out", str(tmp_path / "tev"))
    assert code == 0 and (tmp_path / "tev" / "train.jsonl").exists() and (tmp_path / "tev" / "corpus.jsonl").exists()
    code, text = invoke("export", str(out), "--format", "bogus", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown format" in text
    assert Path(tmp_path / "x").exists() is False


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_users_file_mode(tmp_path, umask):
    """Every output a user may share gets the mode of any new file of theirs (0666 / 0777 less the
    umask): mkstemp's private 0600 must not leak through the atomic rename (manifest.json did)."""
    from tests.test_data import GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, write_beir

    root = write_beir(tmp_path / "data", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    out = tmp_path / "outputs"
    old = os.umask(umask)
    try:
        code, text = invoke("mine", "--dataset", str(root), "--teacher", "bm25", "--num-negatives", "1",
                            "--out", str(out / "run"), "--cache-dir", str(tmp_path / "cache"), "--quiet")
        assert code == 0, text
        for fmt, name in (("triplet", "t.jsonl"), ("n-tuple", "t.parquet"), ("tevatron", "tev")):
            code, text = invoke("export", str(out / "run"), "--format", fmt, "--out", str(out / name))
            assert code == 0, text
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    want = {p: (0o777 if (out / p).is_dir() else 0o666) & ~umask for p in modes}
    assert {p: oct(m) for p, m in modes.items()} == {p: oct(m) for p, m in want.items()}
    assert {"run/manifest.json", "run/negatives.parquet", "t.jsonl", "tev/train.jsonl"} <= set(modes)


MINE_ONLY = {"--config", "--out", "--overwrite", "--no-overwrite"}  # where a run is written and what may replace it
AUDIT_ONLY = {"--hide-fraction", "--json", "--save-run"}  # audit hides positives and reports; --save-run keeps its final run
AUDIT_OWN = {"--dataset", "--split", "--seed", "--quiet", "--no-quiet", "--help"}  # same names, audit's own help / defaults


def _options(command: str) -> dict[str, typer.core.click.Parameter]:
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    return {name: p for p in params for name in [*p.opts, *p.secondary_opts]}


def _listed(command: str) -> set[str]:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", res.output))


def test_mine_and_audit_list_the_same_mining_options():
    """`hardneg mine --help` and `hardneg audit --help` list the same mining options (audit had lost
    --corpus, --embedding-dtype and --strict), each with one help text: every MineConfig field is one."""
    mine, audit = _options("mine"), _options("audit")
    assert set(mine) - MINE_ONLY == set(audit) - AUDIT_ONLY
    assert _listed("mine") - MINE_ONLY == _listed("audit") - AUDIT_ONLY
    assert set(mine) | {"--help"} == _listed("mine") and set(audit) | {"--help"} == _listed("audit")
    for name in set(mine) & set(audit) - AUDIT_OWN:
        assert (mine[name].help, mine[name].default) == (audit[name].help, audit[name].default), name
    fields = {"--" + name.replace("_", "-") for name in MineConfig.model_fields} - {"--llm-judge"}  # via --judge
    assert fields <= set(mine)
    for name, field in MineConfig.model_fields.items():  # help from the field, default left to the model
        option = mine.get("--" + name.replace("_", "-"))
        if option is not None and name != "judge":
            assert option.default is None and escape(field.description or "") in (option.help or ""), name


def test_train_options_are_the_train_config_fields():
    """`hardneg train` takes every TrainConfig field, with its description and no default of its own."""
    train = _options("train")
    for name, field in TrainConfig.model_fields.items():
        option = train["--" + name.replace("_", "-")]
        assert escape(field.description or "") in (option.help or "") and option.default is None, name
        # --run is required in the body, not by the parser: `--negatives RUN` is its old name, and --negatives is
        # also mined|generated|both (test_train_generated checks that a missing run is refused).
        assert option.required == (field.is_required() and name != "run"), name
