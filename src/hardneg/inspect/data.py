"""The inspector's data: a run's tables as columnar arrays grouped by query (offsets), the run-wide
chart specs, and one query's detail as compact JSON (parallel lists, scores rounded, doc indices
into the page's document table). The static page embeds every detail; ``--serve`` sends them one
at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import plots
from ..collection import Collection
from ..decisions.filters import REASON_CODE, REASONS, SIMILARITY_KINDS, FilterSpec
from ..runs.columns import flat
from ..runs.run import Run

STATUS = ("dropped", "kept", "selected")
AUDIT_OUTCOMES = ("not audited", "hidden positive not returned", "hidden positive caught by a rule or judge",
                  "hidden positive returned as a negative")
"""Per query of a run saved by ``hardneg audit --save-run``: the worst that became of its hidden positives."""
EVIDENCE = {"near_duplicate": "word-shingle Jaccard", "near_positive": "cosine",
            "knn_positive": "share of positives among its nearest neighbours"}
"""What each similarity rule measured, as the page names it."""
DIGITS = 4
"""Scores are rounded to this many decimals in the page (enough to tell neighbours apart)."""


def _groups(rows: np.ndarray, n: int) -> np.ndarray:
    """Offsets (n + 1) of rows sorted by group."""
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)


def _json_floats(a: np.ndarray) -> list[Any]:
    """Rounded floats as a list, NaN as None (JSON null)."""
    out = np.round(np.asarray(a, dtype=np.float64), DIGITS).astype(object)
    out[~np.isfinite(np.asarray(a, dtype=np.float64))] = None
    return list(out.tolist())


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Reason codes (positions in REASONS) of a dictionary or string column."""
    col = column.combine_chunks()
    if pa.types.is_dictionary(col.type):
        names = np.asarray(col.dictionary.to_pylist(), dtype=object)
        lookup = np.array([REASON_CODE[str(r)] for r in names], dtype=np.int8)
        return lookup[col.indices.to_numpy(zero_copy_only=False)]
    names, inv = np.unique(np.asarray(col.to_pylist(), dtype=object), return_inverse=True)
    return np.array([REASON_CODE[str(r)] for r in names], dtype=np.int8)[inv]


@dataclass
class PageData:
    """One run, laid out for the page. Candidates and positives are sorted by query (the negatives
    table's order) and found through ``cand_off`` / ``pos_off``; document numbers are the collection's
    rows. ``compare`` is set by :func:`hardneg.inspect.compare.compare`."""

    run: Run
    col: Collection
    teachers: list[str]
    cand_off: np.ndarray
    cand_doc: np.ndarray
    cand_rank: np.ndarray
    cand_status: np.ndarray
    cand_reason: np.ndarray
    cand_scores: dict[str, np.ndarray]
    pos_off: np.ndarray
    pos_doc: np.ndarray
    pos_grade: np.ndarray
    pos_scores: dict[str, np.ndarray]
    query_rows: np.ndarray  # the collection row of each query
    shortfall: np.ndarray
    relabelled: list[list[str]]
    cand_hidden: np.ndarray | None = None  # audit runs: the candidate is a hidden positive
    cand_similarity: dict[str, np.ndarray] = field(default_factory=dict)  # per similarity rule that ran (NaN: none)
    cand_nearest: dict[str, np.ndarray] = field(default_factory=dict)     # that rule's nearest positive (-1: none)
    compare: dict[str, Any] | None = field(default=None)

    @classmethod
    def build(cls, run: Run) -> PageData:
        col = run.collection()
        neg, cand = run.negatives, run.candidates
        nq = neg.num_rows
        qids = neg.column("query_id").to_pylist()
        row_of = {q: i for i, q in enumerate(qids)}
        cq = np.fromiter((row_of[q] for q in cand.column("query_id").to_pylist()), np.int64, cand.num_rows)
        rank = cand.column("rank").to_numpy().astype(np.int64)
        order = np.lexsort((rank, cq))
        cand_doc = col.doc_index(cand.column("doc_id").to_pylist()).astype(np.int64)[order]
        status = (cand.column("kept").to_numpy(zero_copy_only=False).astype(np.int8)
                  + cand.column("selected").to_numpy(zero_copy_only=False).astype(np.int8))
        teachers = [c[len("score_"):] for c in cand.column_names if c.startswith("score_")]
        scores = {t: cand.column(f"score_{t}").to_numpy(zero_copy_only=False).astype(np.float64)[order]
                  for t in teachers}
        pos_ids, pos_parent = flat(neg, "positive_ids")
        pos_grade, _ = flat(neg, "positive_grades")
        filter_on = run.manifest.get("filter_on", teachers[0] if teachers else "")
        pos_scores: dict[str, np.ndarray] = {}
        for t in teachers:
            name = f"positive_scores_{t}" if f"positive_scores_{t}" in neg.column_names else (
                "positive_scores" if t == filter_on else None)
            if name:
                pos_scores[t] = flat(neg, name)[0].astype(np.float64)
        relabelled = (neg.column("relabelled_ids").to_pylist() if "relabelled_ids" in neg.column_names
                      else [[] for _ in range(nq)])
        hidden = None
        if run.manifest.get("audit"):
            h = run.manifest["audit"]["hidden"]
            keys = col.query_index(h["query_id"]).astype(np.int64) * col.num_docs + col.doc_index(h["doc_id"])
            qrows = col.query_index(qids).astype(np.int64)
            hidden = np.isin(qrows[cq[order]] * col.num_docs + cand_doc, keys)
        similarity, nearest = {}, {}
        for kind in SIMILARITY_KINDS:
            if f"similarity_{kind}" in cand.column_names:
                similarity[kind] = cand.column(f"similarity_{kind}").to_numpy(zero_copy_only=False).astype(
                    np.float64)[order]
            if f"nearest_positive_{kind}" in cand.column_names:  # few distinct ids: look each up once
                enc = cand.column(f"nearest_positive_{kind}").combine_chunks().dictionary_encode()
                rows = np.append(col.doc_index(enc.dictionary.to_pylist()).astype(np.int64), -1)
                codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
                nearest[kind] = rows[codes][order]
        return cls(run=run, col=col, teachers=teachers, cand_off=_groups(cq, nq), cand_doc=cand_doc,
                   cand_rank=rank[order], cand_status=status[order], cand_reason=_codes(cand.column("reason"))[order],
                   cand_scores=scores, pos_off=_groups(pos_parent.astype(np.int64), nq),
                   pos_doc=col.doc_index(list(pos_ids)).astype(np.int64), pos_grade=pos_grade.astype(np.int64),
                   pos_scores=pos_scores, query_rows=col.query_index(qids).astype(np.int64),
                   shortfall=neg.column("shortfall").to_numpy().astype(np.int64), relabelled=relabelled,
                   cand_hidden=hidden, cand_similarity=similarity, cand_nearest=nearest)

    @property
    def num_queries(self) -> int:
        return int(self.query_rows.size)

    @property
    def num_candidates(self) -> int:
        return int(self.cand_doc.size)

    def query_index(self) -> dict[str, Any]:
        """The query list: ids, texts, and what the filters need per query (shortfall, the reasons
        present as a bitmask over REASONS, relabelled count, candidates and selected counts)."""
        nq = self.num_queries
        qrow = np.repeat(np.arange(nq), np.diff(self.cand_off))
        mask = np.zeros(nq, dtype=np.int64)
        np.bitwise_or.at(mask, qrow, np.left_shift(1, self.cand_reason.astype(np.int64)))
        selected = np.bincount(qrow[self.cand_status == 2], minlength=nq)
        out = {"id": self.col.query_ids[self.query_rows].tolist(),
               "text": [self.col.query_texts[i] for i in self.query_rows.tolist()],
               "shortfall": self.shortfall.tolist(), "reasons": mask.tolist(),
               "relabelled": [len(r) for r in self.relabelled],
               "candidates": np.diff(self.cand_off).tolist(), "selected": selected.tolist()}
        if self.compare is not None:
            out["changed"] = self.compare["changed_mask"]
        if self.cand_hidden is not None:
            out["audit"] = self.audit_outcomes().tolist()
        return out

    def audit_outcomes(self) -> np.ndarray:
        """Per query, an index into AUDIT_OUTCOMES: 0 for a query with no hidden positive, else the worst
        that became of one: returned as a negative (3), dropped by a rule or judge (2), neither (1)."""
        nq = self.num_queries
        out = np.zeros(nq, dtype=np.int64)
        h = self.run.manifest["audit"]["hidden"]
        audited = np.isin(self.query_rows, self.col.query_index(h["query_id"]))
        out[audited] = 1
        if self.cand_hidden is None:
            return out
        qrow = np.repeat(np.arange(nq), np.diff(self.cand_off))
        np.maximum.at(out, qrow[self.cand_hidden & (self.cand_status == 0)], 2)
        np.maximum.at(out, qrow[self.cand_hidden & (self.cand_status == 2)], 3)
        return out

    def details(self, rows: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The detail of each query in ``rows`` (default: all): positives, then every candidate in
        rank order with its scores, status and reason; lists are converted once, then cut by offsets."""
        rows = np.arange(self.num_queries) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return []
        c_idx = np.concatenate([np.arange(self.cand_off[r], self.cand_off[r + 1]) for r in rows.tolist()])
        p_idx = np.concatenate([np.arange(self.pos_off[r], self.pos_off[r + 1]) for r in rows.tolist()])
        c_len, p_len = (self.cand_off[rows + 1] - self.cand_off[rows]), (self.pos_off[rows + 1] - self.pos_off[rows])
        cand = {"doc": self.cand_doc[c_idx].tolist(), "rank": self.cand_rank[c_idx].tolist(),
                "status": self.cand_status[c_idx].tolist(), "reason": self.cand_reason[c_idx].tolist()}
        if self.cand_hidden is not None:
            cand["hidden"] = self.cand_hidden[c_idx].astype(np.int8).tolist()
        evidence = {k: _json_floats(v[c_idx]) for k, v in self.cand_similarity.items()}
        nearest = {k: v[c_idx].tolist() for k, v in self.cand_nearest.items()}
        cscores = {t: _json_floats(s[c_idx]) for t, s in self.cand_scores.items()}
        pos = {"doc": self.pos_doc[p_idx].tolist(), "grade": self.pos_grade[p_idx].tolist()}
        pscores = {t: _json_floats(s[p_idx]) for t, s in self.pos_scores.items()}
        out, c0, p0 = [], 0, 0
        for r, cl, pl in zip(rows.tolist(), c_len.tolist(), p_len.tolist()):
            c1, p1 = c0 + cl, p0 + pl
            d: dict[str, Any] = {
                "q": r,
                "cand": {k: v[c0:c1] for k, v in cand.items()} | {"scores": {t: v[c0:c1] for t, v in cscores.items()}}
                | {"similarity": {k: v[c0:c1] for k, v in evidence.items()},
                   "nearest": {k: v[c0:c1] for k, v in nearest.items()}},
                "pos": {k: v[p0:p1] for k, v in pos.items()} | {"scores": {t: v[p0:p1] for t, v in pscores.items()}},
                "relabelled": self.col.doc_index(self.relabelled[r]).tolist() if self.relabelled[r] else [],
            }
            if self.compare is not None:
                d["compare"] = self.compare["per_query"].get(r)
            out.append(d)
            c0, p0 = c1, p1
        return out

    def docs_of(self, details: list[dict[str, Any]]) -> dict[str, Any]:
        """The ids and texts of the documents the details name, keyed by document number."""
        used: set[int] = set()
        for d in details:
            used.update(d["cand"]["doc"], d["pos"]["doc"], d["relabelled"])
            for near in d["cand"].get("nearest", {}).values():
                used.update(x for x in near if x >= 0)
            if d.get("compare"):
                used.update(x for side in ("a", "b") for x in d["compare"][side] if x >= 0)
        keys = sorted(used)
        return {"id": {str(k): str(self.col.doc_ids[k]) for k in keys},
                "text": {str(k): self.col.doc_texts[k] for k in keys}}

    def charts(self) -> list[dict[str, Any]]:
        """Run-wide chart specs: score distributions (positives, selected, kept-not-selected, dropped
        per reason), the rank of selected negatives, the margin to the lowest positive, drops per reason."""
        filter_on = self.run.manifest.get("filter_on") or (self.teachers[0] if self.teachers else None)
        out: list[dict[str, Any]] = []
        if filter_on not in self.cand_scores:
            return out
        s = self.cand_scores[filter_on]
        st, reason = self.cand_status, self.cand_reason
        pos = self.pos_scores.get(filter_on, np.zeros(0))
        groups = {"positives": pos, "selected": s[st == 2], "kept_not_selected": s[st == 1]}
        dropped = (st == 0) & (reason != REASON_CODE["positive"])
        for code in np.unique(reason[dropped]).tolist():
            groups[f"dropped: {REASONS[code]}"] = s[dropped & (reason == code)]
        finite = np.concatenate([g[np.isfinite(g)] for g in groups.values()])
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
            hist = {k: (edges, np.histogram(v[np.isfinite(v)], bins=edges)[0]) for k, v in groups.items() if v.size}
            out.append({"id": "chart-scores", "spec": plots.histogram_chart(
                hist, f"{filter_on} score", "share of the group",
                "Score distributions: positives vs selected vs kept vs dropped")})
        ranks = self.cand_rank[st == 2]
        if ranks.size:
            edges_r = np.arange(0.5, ranks.max() + 1.5, max(1, int(np.ceil(ranks.max() / 30))))
            out.append({"id": "chart-ranks", "spec": plots.histogram_chart(
                {"selected": (edges_r, np.histogram(ranks, bins=edges_r)[0])}, "rank in the teacher's list",
                "negatives", "Rank of the selected negatives", normalise=False)})
        qrow = np.repeat(np.arange(self.num_queries), np.diff(self.cand_off))
        lowest = np.full(self.num_queries, np.nan)
        if pos.size:
            prow = np.repeat(np.arange(self.num_queries), np.diff(self.pos_off))
            ok = np.isfinite(pos)
            lowest_ok = np.full(self.num_queries, np.inf)
            np.minimum.at(lowest_ok, prow[ok], pos[ok])
            lowest = np.where(np.isfinite(lowest_ok), lowest_ok, np.nan)
        margin = (lowest[qrow] - s)[st == 2]
        margin = margin[np.isfinite(margin)]
        if margin.size:
            edges_m = np.linspace(float(margin.min()), float(max(margin.max(), margin.min() + 1e-9)), 31)
            out.append({"id": "chart-margin", "spec": plots.histogram_chart(
                {"selected": (edges_m, np.histogram(margin, bins=edges_m)[0])},
                f"lowest positive's {filter_on} score minus the negative's", "negatives",
                "Margin of the selected negatives to the lowest positive", normalise=False)})
        counts = np.bincount(reason[st == 0], minlength=len(REASONS))
        labels = [REASONS[i] for i in range(2, len(REASONS)) if counts[i]]  # known positives are no drop
        if labels:
            out.append({"id": "chart-reasons", "spec": plots.bar_chart(
                labels, [int(counts[REASON_CODE[r]]) for r in labels], "candidates dropped", "",
                "Dropped candidates per reason")})
        return out

    def evidence_rules(self) -> dict[str, dict[str, Any]]:
        """The similarity rules whose evidence the run stores: what each measured and its threshold
        (after calibration: the manifest's resolved filters)."""
        limits = {f.kind: f.value for f in FilterSpec.parse("+".join(self.run.manifest.get("filters", [])) or "none")}
        return {k: {"label": EVIDENCE[k], "threshold": None if not np.isfinite(limits.get(k, np.nan)) else
                    float(limits[k])} for k in self.cand_similarity}

    def head(self, label: str) -> dict[str, Any]:
        """What every page has: the run's name, teachers, reasons, status names, manifest, charts."""
        return {"run": label, "teachers": self.teachers, "reasons": list(REASONS), "status": list(STATUS),
                "audit_outcomes": list(AUDIT_OUTCOMES) if self.cand_hidden is not None else None,
                "filter_on": self.run.manifest.get("filter_on"), "manifest": self.run.manifest,
                "charts": self.charts(), "index": self.query_index(), "evidence": self.evidence_rules(),
                "compare": None if self.compare is None else
                {k: v for k, v in self.compare.items() if k not in ("per_query", "changed_mask")}}
