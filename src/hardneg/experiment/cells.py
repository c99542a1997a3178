"""One cell of an experiment (a variant x a seed): mine -> train -> evaluate, cached in its folder.

A cell is done when its ``metrics.json`` exists (written last); a done cell is read back, never
redone, so a grid resumes over several sittings."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection
from ..errors import OtherSettingsError
from ..evaluation.retrieval import Evaluation, evaluate
from ..mine import mine
from ..progress import Reporter
from ..runs.columns import list_matrix
from ..runs.files import atomic_write, staged_dir, write_json
from .config import ExperimentConfig, Variant


def load_evaluation(cell: Path, prefix: str = "") -> Evaluation | None:
    """A finished cell's test evaluation (``prefix="dev_"``: its dev evaluation), or None if not done."""
    m = cell / f"{prefix}metrics.json"
    if not (cell / "metrics.json").exists() or not m.exists():
        return None
    return Evaluation.read(m, cell / f"{prefix}per_query.jsonl")


TRAINING_LOG = "train.json"


def keep_training_log(cell: Path) -> Path:
    """Copy the trainer's manifest (settings, loss log, refresh statistics) from ``<cell>/model`` to
    ``<cell>/train.json``, which stays with the cell's metrics when the model does not (a grid's folder in git)."""
    from ..training.trainer import MANIFEST

    path = cell / TRAINING_LOG
    atomic_write(path, lambda tmp: shutil.copyfile(cell / "model" / MANIFEST, tmp))
    return path


def evaluate_model(col: Collection, model: str | None, cfg: ExperimentConfig,
                   reporter: Reporter | None = None) -> Evaluation:
    """One evaluation as every cell of the grid (and ``benchmarks/dev_choice.py``) runs it: the config's
    encoder and token limit, the shared embedding cache."""
    return evaluate(col, model=model, cache_dir=cfg.cache_dir, batch_size=64, reporter=reporter,
                    encoder=cfg.eval_encoder, max_length=cfg.eval_max_length)


def evaluate_cell(cell: Path, test: Collection, dev: Collection | None, model: str | None,
                  cfg: ExperimentConfig, reporter: Reporter, extra: dict[str, Any] | None = None) -> Evaluation:
    """Test (and dev) scores of one model; the corpus is encoded once (the cache serves the second)."""
    done = load_evaluation(cell)
    if done is not None:
        return done
    if dev is not None:
        dv = evaluate_model(dev, model, cfg, reporter)
        dv.save_per_query(cell / "dev_per_query.jsonl")
        write_json(cell / "dev_metrics.json", dv.as_json())
    ev = evaluate_model(test, model, cfg, reporter)
    ev.save_per_query(cell / "per_query.jsonl")
    write_json(cell / "metrics.json", ev.as_json() | (extra or {}))  # written last: marks the cell done
    return ev


def st_table(train: Collection, variant: Variant, cfg: ExperimentConfig, path: Path) -> pa.Table:
    """The ST recipe's n-tuples, cached as parquet in the variant folder with the mining seconds beside
    it. ``variant.st["model"]`` mines with another model (default: the base model); a distillation loss
    gets ST's ``output_scores=True`` scores as its label (margin-mse: s+ - s-; kl: [s+, s-...])."""
    if path.exists():
        return pq.read_table(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import time

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from ..runs.fingerprint import resolve_model
    from ..training.losses import WITH_LABELS

    pos = train.positives()
    ds = Dataset.from_dict({"anchor": [train.query_texts[i] for i in pos.query_idx],
                            "positive": [train.doc_texts[i] for i in pos.doc_idx]})
    options = dict(variant.st)
    model = SentenceTransformer(resolve_model(options.pop("model", None) or cfg.base_model))
    scores = variant.loss in WITH_LABELS
    t0 = time.perf_counter()
    # A cache folder per mining: ST keys its embeddings by the model's hub name, which a model loaded
    # from a folder lacks, so recipes with different models would share one file.
    res = mine_hard_negatives(ds, model, corpus=list(train.doc_texts), output_format="n-tuple",
                              sampling_strategy="top", batch_size=64, verbose=False, output_scores=scores,
                              cache_folder=str(path.parent / "st-cache" / path.stem), **options)
    seconds = time.perf_counter() - t0
    table = res.data.table if hasattr(res, "data") else pa.Table.from_pylist(res.to_list())
    table = pa.table({c: table.column(c) for c in table.column_names})
    if scores:
        s = list_matrix(table, "scores")
        label = s[:, :1] - s[:, 1:] if variant.loss == "margin-mse" else s
        table = table.drop_columns(["scores"]).append_column("label", pa.array(label.tolist(), pa.list_(pa.float32())))
    # The seconds first, then the table through a temporary file: the table's presence marks the mining done.
    write_json(path.with_suffix(".json"), {"mine_seconds": round(seconds, 1), "rows": table.num_rows})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return table


@dataclass
class Cells:
    """The cells of one experiment folder: where each lives, and how one is run."""

    out: Path
    cfg: ExperimentConfig
    train: Collection
    test: Collection
    dev: Collection | None
    reporter: Reporter
    runs: dict[str, Any] = field(default_factory=dict)  # variant -> its mined run (mined once, for every seed)

    def folder(self, variant: str, seed: int) -> Path:
        return self.out / "variants" / variant / f"seed-{seed}"

    def load(self, variant: str, seed: int, prefix: str = "") -> Evaluation | None:
        return load_evaluation(self.folder(variant, seed), prefix)

    def choice_model(self, v: Variant, seed: int) -> Path:
        """Where ``benchmarks/dev_choice.py`` trains this variant and seed at the grid's budget."""
        budget = self.cfg.budget.model_dump() | v.budget
        from ..training.precision import training_bf16

        tag = f"steps-{budget['max_steps']}{'-bf16' if training_bf16(budget.get('bf16')) else ''}"
        return self.out / "variants" / v.name / tag / f"seed-{seed}" / "model"

    def st_table_path(self, v: Variant) -> Path:
        """Where an ST variant's mined table is cached: one per recipe (its options, the mining model, which is
        the base model unless ``st.model`` names another, and the labels a distillation loss needs), shared by
        the variants and seeds that use the same recipe."""
        spec = dict(v.st)
        if "model" not in spec and self.cfg.base_model is not None:
            spec["model"] = self.cfg.base_model
        if v.loss in ("margin-mse", "kl"):
            spec["loss"] = v.loss
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.out / "st-mined" / f"{key}.parquet"

    def train_cell(self, v: Variant, seed: int, cell: Path | None = None) -> float:
        """Mine (once per variant) and train one cell's model into ``<cell>/model`` (default cell: the
        variant's seed folder); returns the seconds its mining took (teacher compute included, as
        measured when the run or ST table was mined). A finished model with the same settings already
        there is kept; for a grid cell, so is the dev-choice model of the same variant, seed and budget
        (the trainer's settings key decides: a model made with other settings is trained again)."""
        from ..training.trainer import MANIFEST

        model_dir = (cell or self.folder(v.name, seed)) / "model"
        chosen = self.choice_model(v, seed)
        if cell is None and not (model_dir / MANIFEST).exists() and (chosen / MANIFEST).exists():
            with staged_dir(model_dir, overwrite=True) as tmp:
                shutil.copytree(chosen, tmp, dirs_exist_ok=True)
        try:
            return self._train(v, seed, model_dir, overwrite=False)
        except OtherSettingsError:
            return self._train(v, seed, model_dir, overwrite=True)

    def _train(self, v: Variant, seed: int, model_dir: Path, overwrite: bool) -> float:
        from ..training import TrainConfig, train, train_on_table

        cfg, vdir = self.cfg, self.out / "variants" / v.name
        tcfg = dict(model=cfg.base_model, loss=v.loss, seed=seed, **(cfg.budget.model_dump() | v.budget | v.train))
        if v.kind == "hardneg":
            if v.name not in self.runs:
                options = {"cache_dir": cfg.cache_dir, **v.mine}
                self.runs[v.name] = mine(self.train, out=str(vdir / "run"), reporter=self.reporter, **options)
            train(self.runs[v.name], model_dir, overwrite=overwrite, progress=self.reporter.enabled, **tcfg)
            return float(sum(self.runs[v.name].manifest.get("timings", {}).values()))
        table_path = self.st_table_path(v)
        table = st_table(self.train, v, cfg, table_path)
        tc = TrainConfig(run=str(table_path), out=str(model_dir), **tcfg)
        train_on_table(lambda t=table: t, tc, {"st_recipe": v.st, "config_fingerprint": str(v.st)},
                       overwrite=overwrite, progress=self.reporter.enabled)
        meta = table_path.with_suffix(".json")
        return float(json.loads(meta.read_text())["mine_seconds"]) if meta.exists() else 0.0

    def run(self, v: Variant, seed: int) -> None:
        """Mine (once per variant) -> train -> evaluate one cell, unless it is done."""
        cell = self.folder(v.name, seed)
        if load_evaluation(cell) is not None:
            return
        mine_seconds = self.train_cell(v, seed)
        made = json.loads(keep_training_log(cell).read_text())
        evaluate_cell(cell, self.test, self.dev, str(cell / "model"), self.cfg, self.reporter,
                      {"train_seconds": made["seconds"], "train_steps": made["steps"],
                       "mine_seconds": round(mine_seconds, 1)})
