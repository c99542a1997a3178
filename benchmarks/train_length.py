"""What a shorter training sequence length saves: seconds per step of MNRL with 4 hard negatives at
batch 32 on SciFact train, at max_length 128 vs 256, measured alternately in one process.

Run: python benchmarks/train_length.py [--steps 4] [--cache-dir DIR]
Prints the share of SciFact abstracts longer than 128 tokens (what truncation cuts) and the
measured seconds per step at each length. Quality at each length is measured by the A/B grid."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

import hardneg
from hardneg.training import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    col = hardneg.load(DATA, "train")
    run = hardneg.mine(col, teacher="dense", filter="percpos:0.95", num_negatives=4, cache_dir=args.cache_dir)
    from sentence_transformers import SentenceTransformer

    from hardneg.runs.fingerprint import resolve_model

    tok = SentenceTransformer(resolve_model(None)).tokenizer
    lengths = np.array([len(tok(t, add_special_tokens=True)["input_ids"]) for t in col.doc_texts])
    print(f"{platform.machine()}, {date.today()}: SciFact abstracts: median {np.median(lengths):.0f} tokens, "
          f"{(lengths > 128).mean():.1%} longer than 128, {(lengths > 256).mean():.1%} longer than 256")
    per_step: dict[int, list[float]] = {128: [], 256: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for length in (128, 256):
                out = Path(tmp) / f"m{length}-{r}"
                train(run, out, loss="mnrl-hn", batch_size=32, max_steps=args.steps, max_length=length,
                      warmup_ratio=0.0, progress=False)
                meta = json.loads((out / "hardneg_train.json").read_text())
                per_step[length].append(meta["seconds"] / meta["steps"])
                print(f"round {r}: max_length {length}: {meta['seconds'] / meta['steps']:.1f} s/step "
                      f"(incl. model load, {meta['steps']} steps)")
    a, b = np.mean(per_step[128]), np.mean(per_step[256])
    print(f"mean s/step: 128 -> {a:.1f}, 256 -> {b:.1f}; 256 costs {b / a:.2f}x the time of 128")


if __name__ == "__main__":
    main()
