"""Seconds per training step in fp32 and with bfloat16 autocast (``--bf16``), measured alternately in
one process: MNRL with 4 mined negatives, batch 32, max_length 128, on SciFact train.

Run: python benchmarks/train_bf16.py [--steps 3] [--rounds 2] [--cache-dir DIR]
Quality of each is measured by training cells on dev (benchmarks/learning_curve.py --bf16)."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

import hardneg
from hardneg.candidates.encoders import cpu_bf16
from hardneg.training import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    run = hardneg.mine(hardneg.load(DATA, "train"), teacher="dense", filter="percpos:0.95", num_negatives=4,
                       cache_dir=args.cache_dir)
    print(f"{platform.machine()}, {date.today()}, native bf16: {cpu_bf16()}")
    per_step: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for bf16 in (False, True):
                out = Path(tmp) / f"m{bf16}-{r}"
                train(run, out, loss="mnrl-hn", batch_size=32, max_steps=args.steps, max_length=128,
                      warmup_ratio=0.0, progress=False, bf16=bf16)
                meta = json.loads((out / "hardneg_train.json").read_text())
                per_step[bf16].append(meta["seconds"] / meta["steps"])
                print(f"round {r}: bf16={bf16}: {per_step[bf16][-1]:.1f} s/step (incl. model load)", flush=True)
    a, b = np.mean(per_step[False]), np.mean(per_step[True])
    print(f"mean s/step: fp32 {a:.1f}, bf16 {b:.1f}: bf16 takes {b / a:.2f}x the time of fp32")


if __name__ == "__main__":
    main()
