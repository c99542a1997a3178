"""Loaders: real collections load with the documented counts; every bad input gets an error that
names the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hardneg
from hardneg import DataError
from tests.conftest import shared


def test_scifact_counts(scifact_train):
    assert scifact_train.num_docs == 5183
    assert scifact_train.query_ids.size == 1109
    assert scifact_train.judged_queries().size == 809
    assert len(scifact_train.qrels) == 919
    assert list(scifact_train.doc_ids) == sorted(scifact_train.doc_ids)
    # title and text are joined with a space (the BEIR/MTEB convention)
    i = int(scifact_train.doc_index(["4983"])[0])
    assert scifact_train.doc_texts[i].startswith("Microstructural development of human newborn cerebral white matter")


def test_cranfield_graded_and_empty_docs():
    with pytest.warns(UserWarning, match="empty document"):
        col = hardneg.load(shared("cranfield"), "test")
    assert col.num_docs == 1398  # documents 471 and 995 are empty
    assert set(np.unique(col.qrels.grade)) <= {0, 1, 2, 3, 4}
    assert any("995" in n for n in col.notes)
    assert col.source["counts"]["empty_docs_skipped"] == 2
    assert len(col.warnings) == 1 and "2 empty document(s) skipped" in col.warnings[0]
    with pytest.raises(DataError, match=r"corpus.jsonl:\d+: field 'text'.*empty"):
        hardneg.load(shared("cranfield"), "test", strict=True)


def write_beir(root: Path, corpus: list[str], queries: list[str], qrels: list[str]) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return root


GOOD_CORPUS = ['{"_id": "d1", "title": "t", "text": "alpha beta"}', '{"_id": "d2", "text": "gamma delta"}',
               '{"_id": "d3", "text": "epsilon"}']
GOOD_QUERIES = ['{"_id": "q1", "text": "alpha?"}', '{"_id": "q2", "text": "gamma?"}']
GOOD_QRELS = ["q1\td1\t1", "q2\td2\t2", "q2\td3\t0"]


def test_mine_warns_and_keeps_warnings_in_the_manifest(tmp_path):
    """API users still get warnings.warn; the run's manifest keeps them, also for a collection that
    was loaded (and warned about) before mine() was called."""
    root = write_beir(tmp_path, GOOD_CORPUS + ['{"_id": "d4", "text": ""}'], GOOD_QUERIES, GOOD_QRELS)
    with pytest.warns(UserWarning, match=r"corpus\.jsonl:4: field 'text': 1 empty document"):
        run = hardneg.mine(root, teacher="bm25", num_negatives=1, cache_dir=str(tmp_path / "cache"))
    assert len(run.manifest["warnings"]) == 1 and "'d4'" in run.manifest["warnings"][0]
    with pytest.warns(UserWarning):
        col = hardneg.load(root)
    run = hardneg.mine(col, teacher="bm25", num_negatives=1, cache_dir=str(tmp_path / "cache"))
    assert run.manifest["warnings"] == col.warnings


def _warn_ours_twice_and_theirs() -> list[str]:
    import warnings

    from hardneg.errors import HardnegWarning, kept_warnings

    with kept_warnings() as kept:
        for _ in range(2):  # a repeat is kept too (the default filter would show it once)
            warnings.warn("ours", HardnegWarning, stacklevel=1)
        warnings.warn("theirs", FutureWarning, stacklevel=1)
    return kept


def test_kept_warnings_records_ours_and_passes_all_on():
    with pytest.warns(Warning) as seen:
        kept = _warn_ours_twice_and_theirs()
    assert kept == ["ours", "ours"]
    assert [str(w.message) for w in seen] == ["ours", "ours", "theirs"]


def test_small_beir_loads(tmp_path):
    col = hardneg.load(write_beir(tmp_path, GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS), "train")
    assert col.num_docs == 3 and len(col.qrels) == 3
    assert col.positives().grade.tolist() == [1, 2]  # grade kept; grade 0 is not a positive
    assert col.doc_texts[0] == "t alpha beta"


BAD_CASES = {
    "malformed json": (["{\"_id\": \"d1\", \"text\": \"x\"}", "{not json"], GOOD_QUERIES, GOOD_QRELS,
                       r"corpus\.jsonl:2: malformed JSON"),
    "missing field": (GOOD_CORPUS + ['{"title": "no id", "text": "x"}'], GOOD_QUERIES, GOOD_QRELS,
                      r"corpus\.jsonl:4: field '_id': is missing"),
    "duplicate doc id": (GOOD_CORPUS + ['{"_id": "d2", "text": "again"}'], GOOD_QUERIES, GOOD_QRELS,
                         r"corpus\.jsonl:4: field '_id': duplicate id 'd2' \(first seen at .*corpus\.jsonl:2\)"),
    "duplicate query id": (GOOD_CORPUS, GOOD_QUERIES + ['{"_id": "q1", "text": "x"}'], GOOD_QRELS,
                           r"queries\.jsonl:3: field '_id': duplicate id 'q1'"),
    "empty query": (GOOD_CORPUS, GOOD_QUERIES + ['{"_id": "q3", "text": "  "}'], GOOD_QRELS,
                    r"queries\.jsonl:3: field 'text': query 'q3' has an empty text"),
    "qrels unknown query": (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + ["q9\td1\t1"],
                            r"train\.tsv:5: field 'query-id': query id 'q9' is not in the queries"),
    "qrels unknown doc": (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + ["q1\tdx\t1"],
                          r"train\.tsv:5: field 'corpus-id': corpus id 'dx' is not in the corpus"),
    "qrels bad score": (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + ["q1\td2\thigh"],
                        r"train\.tsv:5: field 'score': score 'high' is not a number"),
    "qrels bad columns": (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + ["q1 d2"],
                          r"train\.tsv:5: expected 3 tab-separated columns, found 2"),
    "text not a string": (GOOD_CORPUS + ['{"_id": "d4", "text": 5}'], GOOD_QUERIES, GOOD_QRELS,
                          r"corpus\.jsonl:4: field 'text': expected a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_beir_input(tmp_path, case):
    corpus, queries, qrels, pattern = BAD_CASES[case]
    root = write_beir(tmp_path / "data", corpus, queries, qrels)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=pattern):
        hardneg.mine(root, teacher="bm25", out=str(out), cache_dir=str(tmp_path / "cache"))
    assert not out.exists()
    assert not any(p.name.startswith(".run") for p in tmp_path.iterdir())


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        hardneg.load(tmp_path / "nowhere", "train")
    root = write_beir(tmp_path / "d", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: file not found \(split 'dev'; available: train\)"):
        hardneg.load(root, "dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=r"queries\.jsonl: file not found"):
        hardneg.load(root, "train")


def test_pairs_jsonl_csv_parquet(tmp_path):
    rows = [{"query": "what is alpha", "positive": "alpha is a letter"},
            {"query": "what is alpha", "positive": "alpha: first letter"},  # same query -> 2 positives
            {"query": "beta?", "positive": ["beta is second", "beta follows alpha"]}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = tmp_path / "extra.txt"
    extra.write_text("an unrelated document\nalpha is a letter\n\n")
    col = hardneg.load(tmp_path / "p.jsonl", corpus=extra)
    assert col.query_ids.size == 2 and col.num_docs == 5  # duplicate text in extra merges
    assert sorted(np.bincount(col.positives().query_idx).tolist()) == [2, 2]

    flat = [r for r in rows if isinstance(r["positive"], str)]
    pq.write_table(pa.Table.from_pylist([{"anchor": r["query"], "pos": r["positive"]} for r in flat]),
                   tmp_path / "p.parquet")
    col = hardneg.load(tmp_path / "p.parquet")
    assert col.query_ids.size == 1 and col.num_docs == 2
    (tmp_path / "p.csv").write_text("question,document\nq one,doc one\nq two,doc two\n")
    assert hardneg.load(tmp_path / "p.csv").num_docs == 2


def test_pairs_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"query": "x", "positive": "y"}\n{"query": "z"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: field 'positive': expected a string or a list"):
        hardneg.load(tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text('{"q": "x", "positive": "y"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:1: no query column found"):
        hardneg.load(tmp_path / "b.jsonl")
    (tmp_path / "c.csv").write_text("query,positive\nx,y\n  ,z\n")
    with pytest.raises(DataError, match=r"c\.csv:3: field 'query': empty query text"):
        hardneg.load(tmp_path / "c.csv")
    (tmp_path / "d.jsonl").write_text('{"query": "x", "positive": "y"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a JSON object"):
        hardneg.load(tmp_path / "d.jsonl")


def test_hf_dataset_object_and_local_mteb_layout(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"anchor": ["q a", "q b"], "positive": ["doc a", "doc b"]})
    col = hardneg.load(ds)
    assert col.query_ids.size == 2 and col.source["kind"] == "hf-object"

    # A local Hugging Face dataset folder in the MTEB layout (configs corpus / queries / default).
    root = tmp_path / "mteb-like"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus").mkdir()
    (root / "corpus" / "corpus.jsonl").write_text("\n".join(GOOD_CORPUS) + "\n")
    (root / "corpus" / "queries.jsonl").write_text("\n".join(GOOD_QUERIES) + "\n")
    (root / "qrels" / "train.jsonl").write_text("".join(
        json.dumps({"query-id": q, "corpus-id": d, "score": int(s)}) + "\n"
        for q, d, s in (line.split("\t") for line in GOOD_QRELS)))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: corpus\n  data_files:\n  - split: corpus\n    path: corpus/corpus.jsonl\n"
        "- config_name: queries\n  data_files:\n  - split: queries\n    path: corpus/queries.jsonl\n"
        "- config_name: default\n  data_files:\n  - split: train\n    path: qrels/train.jsonl\n"
        "---\n")
    col = hardneg.load_hf(str(root), "train")
    assert col.num_docs == 3 and col.positives().grade.tolist() == [1, 2]
    assert hardneg.load(str(root), "train").num_docs == 3  # no corpus.jsonl on top: an HF folder


def test_slice_is_consistent(scifact_slice):
    col = scifact_slice
    assert col.judged_queries().size == 30
    assert col.qrels.doc_idx.max() < col.num_docs
    assert list(col.doc_ids) == sorted(col.doc_ids)


# Every reader: a byte that is not UTF-8 names the file, the line and the column (in characters),
# never a bare UnicodeDecodeError. name -> (file, its bytes, --corpus file or None, expected message)
BAD_BYTE = b"caf\xe9"
UTF8_CASES = {
    "queries jsonl": ("queries.jsonl", b'{"_id": "q1", "text": "alpha?"}\n{"_id": "q2", "text": "\xc3\xa9' + BAD_BYTE
                      + b'"}\n', None, r"queries\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 28\)"),
    "qrels tsv": ("qrels/train.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\t" + BAD_BYTE + b"\t1\n", None,
                  r"train\.tsv:3: not valid UTF-8 \(byte 0xe9 at column 7\)"),
    "pairs json": ("p.json", b'[{"query": "x", "positive": "y"},\n {"query": "' + BAD_BYTE + b'", "positive": "z"}]',
                   None, r"p\.json:2: not valid UTF-8 \(byte 0xe9 at column 16\)"),
    "pairs jsonl": ("p.jsonl", b'{"query": "x", "positive": "y"}\n\n{"query": "' + BAD_BYTE + b'", "positive": "z"}\n',
                    None, r"p\.jsonl:3: not valid UTF-8 \(byte 0xe9 at column 15\)"),
    "pairs csv": ("p.csv", b"query,positive\nx,y\n" + BAD_BYTE + b",z\n", None,
                  r"p\.csv:3: not valid UTF-8 \(byte 0xe9 at column 4\)"),
    "pairs tsv": ("p.tsv", b"query\tpositive\nx\ty\nz\t" + BAD_BYTE + b"\n", None,
                  r"p\.tsv:3: not valid UTF-8 \(byte 0xe9 at column 6\)"),
    "corpus txt": ("extra.txt", b"one document\n" + BAD_BYTE + b"\n", "extra.txt",
                   r"extra\.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\)"),
    "corpus jsonl": ("extra.jsonl", b'{"text": "' + BAD_BYTE + b'"}\n', "extra.jsonl",
                     r"extra\.jsonl:1: not valid UTF-8 \(byte 0xe9 at column 14\)"),
}


@pytest.mark.parametrize("case", sorted(UTF8_CASES))
def test_not_utf8_names_file_line_and_column(tmp_path, case):
    name, data, corpus, pattern = UTF8_CASES[case]
    root = write_beir(tmp_path / "beir", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    (tmp_path / "p.jsonl").write_text('{"query": "x", "positive": "y"}\n')
    target = (root if name.startswith(("queries", "qrels")) else tmp_path) / name
    target.write_bytes(data)
    dataset = root if target.is_relative_to(root) else tmp_path / ("p.jsonl" if corpus else name)
    with pytest.raises(DataError, match=pattern):
        hardneg.load(dataset, "train", corpus=tmp_path / corpus if corpus else None)


def _parquet_strings(values: list[bytes], binary: bool) -> pa.Array:
    """A string (or binary) array holding these bytes as they are: a writer that does not check
    UTF-8 can produce a string column like this."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(pa.binary() if binary else pa.string(), len(values),
                                 [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))])


@pytest.mark.parametrize("binary", [True, False], ids=["binary column", "string column"])
def test_parquet_not_utf8_names_row_and_column(tmp_path, binary):
    good = [b"alpha is a letter", b"beta follows"]
    queries = _parquet_strings([b"what is alpha", b"beta?"], binary)
    pq.write_table(pa.table({"query": queries, "positive": _parquet_strings(good, binary)}), tmp_path / "ok.parquet")
    col = hardneg.load(tmp_path / "ok.parquet")  # binary text columns that are UTF-8 load as text
    assert sorted(col.doc_texts) == ["alpha is a letter", "beta follows"]
    bad = _parquet_strings([b"alpha is a letter", b"b\xc3\xa9ta " + BAD_BYTE], binary)
    pq.write_table(pa.table({"query": queries, "positive": bad}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: row 2: field 'positive': not valid UTF-8 "
                                        r"\(byte 0xe9 at column 9\)"):
        hardneg.load(tmp_path / "bad.parquet")


def test_fingerprints_are_not_kept_in_source(scifact_dir):
    """``source`` describes the source only: the fingerprints are cached on the object, and a
    slice or holdout neither inherits stale ones nor gains private keys."""
    col = hardneg.load(scifact_dir, "train")
    before = dict(col.source)
    corpus_fp, queries_fp, qrels_fp = col.corpus_fingerprint(), col.queries_fingerprint(), col.qrels_fingerprint()
    assert col.source == before and not any(k.startswith("_") for k in col.source)
    assert (col.corpus_fingerprint(), col.queries_fingerprint()) == (corpus_fp, queries_fp)
    dev = col.holdout(100, part="dev")
    assert not any(k.startswith("_") for k in dev.source) and dev.source["holdout"]["part"] == "dev"
    assert dev.corpus_fingerprint() == corpus_fp  # same corpus
    assert dev.queries_fingerprint() != queries_fp and dev.qrels_fingerprint() != qrels_fp
    small = col.slice(10, extra_docs=20)
    assert not any(k.startswith("_") for k in small.source)
    assert small.corpus_fingerprint() != corpus_fp and small.queries_fingerprint() != queries_fp
    fresh = hardneg.load(scifact_dir, "train")
    fresh_dev = fresh.holdout(100, part="dev")
    assert (fresh_dev.corpus_fingerprint(), fresh_dev.queries_fingerprint()) == \
        (dev.corpus_fingerprint(), dev.queries_fingerprint())
