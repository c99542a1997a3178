"""``--compare``: which queries got different negatives in another mining of the same data, and the
moves (added, removed, kept). The other side is a hardneg run folder (matched by query and document
id) or a sentence-transformers ``mine_hard_negatives`` output (a parquet / jsonl / csv file or a saved
``datasets`` folder with ``anchor``, ``positive`` and ``negative`` / ``negative_1..n`` text columns),
matched to ids by exact text; a text found in neither is kept as text and shown as such."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError, RunError
from ..runs.run import Run
from .data import PageData

QUERY_COLUMNS = ("anchor", "query", "question")


def read_st_output(path: Path) -> pa.Table:
    """A sentence-transformers mining output as an Arrow table."""
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        return ds.data.table
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix in (".jsonl", ".json"):
        import pyarrow.json as pj

        return pj.read_json(path)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pc

        return pc.read_csv(path, parse_options=pc.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","))
    raise DataError(path, "not a run folder nor a sentence-transformers output (.parquet, .jsonl, .csv, a datasets folder)")


def _st_negatives(path: Path) -> dict[str, list[str]]:
    """Query text -> negative texts in column order (rows with the same anchor are joined)."""
    table = read_st_output(path)
    qcol = next((c for c in QUERY_COLUMNS if c in table.column_names), None)
    ncols = [c for c in table.column_names if c.startswith("negative")]
    if qcol is None or not ncols:
        raise DataError(path, f"expected an anchor column ({'/'.join(QUERY_COLUMNS)}) and negative columns, "
                        f"found {', '.join(table.column_names)}", field=qcol or "negative")
    out: dict[str, list[str]] = {}
    cols = [table.column(c).to_pylist() for c in ncols]
    for i, q in enumerate(table.column(qcol).to_pylist()):
        negs = out.setdefault(str(q), [])
        for c in cols:
            values = c[i] if isinstance(c[i], list) else [c[i]]
            negs.extend(str(v) for v in values if v is not None and str(v) not in negs)
    return out


def compare(page: PageData, other: str | Path) -> dict[str, Any]:
    """Set ``page.compare`` to the moves between ``page``'s selected negatives and ``other``'s, per
    query (only changed queries are listed) and in total; returns it."""
    col = page.col
    extra: list[str] = []
    extra_of: dict[str, int] = {}
    other = Path(other)

    def as_number(text: str, known: dict[str, int]) -> int:
        if text in known:
            return known[text]
        if text not in extra_of:
            extra_of[text] = -(len(extra) + 1)
            extra.append(text)
        return extra_of[text]

    qrow_of_text: dict[str, int] = {}
    qtexts = [col.query_texts[i] for i in page.query_rows.tolist()]
    for r, t in enumerate(qtexts):
        qrow_of_text.setdefault(t, r)
    b_neg: dict[int, list[int]] = {}
    if (other / "manifest.json").exists():
        run = Run.load(other)
        ocol = run.collection()
        doc_row = {str(d): i for i, d in enumerate(col.doc_ids.tolist())}
        qrow_of_id = {str(col.query_ids[q]): r for r, q in enumerate(page.query_rows.tolist())}
        for qid, ids in zip(run.negatives.column("query_id").to_pylist(),
                            run.negatives.column("negative_ids").to_pylist()):
            if qid in qrow_of_id:
                texts = ocol.doc_texts
                b_neg[qrow_of_id[qid]] = [doc_row[d] if d in doc_row else
                                          as_number(texts[int(ocol.doc_index([d])[0])], {}) for d in ids]
        kind, unmatched = "hardneg run", sum(q not in qrow_of_id for q in run.negatives.column("query_id").to_pylist())
    elif other.exists():
        text_row: dict[str, int] = {}
        for i, t in enumerate(col.doc_texts):
            text_row.setdefault(t, i)
        st = _st_negatives(other)
        for qtext, negs in st.items():
            if qtext in qrow_of_text:
                b_neg[qrow_of_text[qtext]] = [as_number(t, text_row) for t in negs]
        kind, unmatched = "sentence-transformers output", sum(q not in qrow_of_text for q in st)
    else:
        raise RunError(f"{other}: nothing to compare with (not found)")
    qrow = np.repeat(np.arange(page.num_queries), np.diff(page.cand_off))
    sel = page.cand_status == 2
    a_neg: dict[int, list[int]] = {r: [] for r in range(page.num_queries)}
    for r, d in zip(qrow[sel].tolist(), page.cand_doc[sel].tolist()):
        a_neg[r].append(d)
    per_query: dict[int, dict[str, Any]] = {}
    mask, totals = [], {"added": 0, "removed": 0, "kept": 0}
    for r in range(page.num_queries):
        if r not in b_neg:
            mask.append(-1)
            continue
        a, b = a_neg[r], b_neg[r]
        moves = {"added": len(set(b) - set(a)), "removed": len(set(a) - set(b)), "kept": len(set(a) & set(b))}
        for k, v in moves.items():
            totals[k] += v
        changed = set(a) != set(b)
        mask.append(int(changed))
        if changed:
            per_query[r] = {"a": a, "b": b, **moves}
    page.compare = {"other": str(other), "kind": kind, "totals": totals, "changed": len(per_query),
                    "matched": sum(m >= 0 for m in mask), "missing": mask.count(-1), "unmatched_other": unmatched,
                    "extra": extra, "per_query": per_query, "changed_mask": mask}
    return page.compare
