"""Bad input through the installed ``hardneg`` command, one case per class, as a user meets it.

Each case is a tiny hand-written BEIR folder (or pairs file) mined with BM25. The properties are the
ones a user relies on: exit code 2 (0 for a warning), stderr exactly one line starting with
``error:`` (``warning:``) that names the file, the line and the field, no Python traceback or
source line, and nothing written: no --out folder, no staging or temporary entries next to it, no
cache folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared

HARDNEG = Path(sys.executable).parent / "hardneg"  # the console script the package installs

CORPUS = ['{"_id": "d1", "title": "t", "text": "alpha beta"}', '{"_id": "d2", "text": "gamma delta"}',
          '{"_id": "d3", "text": "epsilon alpha"}']
QUERIES = ['{"_id": "q1", "text": "alpha?"}', '{"_id": "q2", "text": "gamma?"}']
QRELS = ["q1\td1\t1", "q2\td2\t2", "q2\td3\t0"]


def beir(corpus: list[str] = CORPUS, queries: list[str] | None = QUERIES,
         qrels: list[str] = QRELS) -> dict[str, bytes]:
    """A BEIR folder's files (``queries=None`` leaves the queries file out)."""
    files = {"data/corpus.jsonl": "\n".join(corpus) + "\n",
             "data/qrels/train.tsv": "query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n"}
    if queries is not None:
        files["data/queries.jsonl"] = "\n".join(queries) + "\n"
    return {k: v.encode("utf-8") for k, v in files.items()}


NOT_UTF8 = beir()
NOT_UTF8["data/corpus.jsonl"] += b'{"_id": "d4", "text": "caf\xe9 au lait"}\n'

# name -> (files, --dataset, expected exit code, pattern the one stderr line must match)
CASES: dict[str, tuple[dict[str, bytes], str, int, str]] = {
    "missing file": (beir(queries=None), "data", 2,
                     r"error: \S+/data/queries\.jsonl: file not found \(a BEIR folder needs .*\)"),
    "malformed JSON": (beir(corpus=[*CORPUS[:1], '{"_id": "d2", "text": }', *CORPUS[2:]]), "data", 2,
                       r"error: \S+/data/corpus\.jsonl:2: malformed JSON \(Expecting value at column 23\)"),
    "non-UTF-8 byte": (NOT_UTF8, "data", 2,
                       r"error: \S+/data/corpus\.jsonl:4: not valid UTF-8 \(byte 0xe9 at column 27\)"),
    "missing field": (beir(corpus=[*CORPUS, '{"_id": "d4", "title": "no text"}']), "data", 2,
                      r"error: \S+/data/corpus\.jsonl:4: field 'text': is missing"),
    "duplicate id": (beir(corpus=[*CORPUS, '{"_id": "d2", "text": "again"}']), "data", 2,
                     (r"error: \S+/data/corpus\.jsonl:4: field '_id': duplicate id 'd2' "
                      r"\(first seen at \S+/data/corpus\.jsonl:2\)")),
    "unknown qrels id": (beir(qrels=[*QRELS, "q1\tdx\t1"]), "data", 2,
                         (r"error: \S+/data/qrels/train\.tsv:5: field 'corpus-id': corpus id 'dx' is not in "
                          r"the corpus")),
    "non-numeric grade": (beir(qrels=[*QRELS, "q1\td3\thigh"]), "data", 2,
                          r"error: \S+/data/qrels/train\.tsv:5: field 'score': score 'high' is not a number"),
    "empty query": (beir(queries=[*QUERIES, '{"_id": "q3", "text": " "}']), "data", 2,
                    r"error: \S+/data/queries\.jsonl:3: field 'text': query 'q3' has an empty text"),
    "empty document": (beir(corpus=[*CORPUS, '{"_id": "d4", "title": "", "text": ""}']), "data", 0,
                       (r"warning: \S+/data/corpus\.jsonl:4: field 'text': 1 empty document\(s\) skipped, "
                        r"the first is 'd4' \(--strict makes them an error\)")),
    "wrong pairs columns": ({"pairs.jsonl": b'{"q": "alpha?", "p": "alpha beta"}\n'}, "pairs.jsonl", 2,
                            (r"error: \S+/pairs\.jsonl:1: no query column found \(looked for query, .*; "
                             r"columns: q, p\); name it explicitly")),
}


def hardneg(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    if not HARDNEG.exists():
        pytest.fail(f"the installed command is missing: {HARDNEG} (pip install -e .)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARDNEG_CACHE_DIR": str(cache)}
    return subprocess.run([str(HARDNEG), *args], capture_output=True, text=True, env=env, check=False,
                          timeout=300)


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_and_nothing_written(tmp_path, case):
    files, dataset, code, pattern = CASES[case]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = sorted(p.name for p in tmp_path.iterdir())
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = hardneg("mine", "--dataset", str(tmp_path / dataset), "--teacher", "bm25", "--out", str(out),
                   "--quiet", cache=cache)
    lines = stderr_lines(proc)
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert re.fullmatch(pattern, lines[0]), lines[0]
    if code:
        assert proc.stdout == ""
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run, staging, temp or cache
    else:  # a warning: the run is written, and keeps the warning in its manifest
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["warnings"] == [lines[0].removeprefix("warning: ")]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "cache", "run"])


def test_cranfield_empty_documents_warn_in_one_line(tmp_path):
    """Cranfield has two empty documents: one ``warning:`` line, no Python source line, and the
    manifest keeps it."""
    out = tmp_path / "run"
    proc = hardneg("mine", "--dataset", str(shared("cranfield")), "--split", "test", "--teacher", "bm25",
                   "--num-negatives", "2", "--out", str(out), "--quiet", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("warning: "), proc.stderr
    assert re.search(r"corpus\.jsonl:\d+: field 'text': 2 empty document\(s\) skipped", lines[0]), lines[0]
    assert "UserWarning" not in proc.stderr and "load_beir" not in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["warnings"] == [lines[0].removeprefix("warning: ")]


def test_error_text_is_printed_verbatim(tmp_path):
    """The console must not read a path as markup: ``[x]`` vanished from the message before."""
    proc = hardneg("stats", str(tmp_path / "runs[x]"), cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert stderr_lines(proc) == [f"error: {tmp_path / 'runs[x]'}: run folder not found"]
