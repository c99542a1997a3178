"""train(): a run folder + a base model -> a fine-tuned sentence-transformers model folder."""

from __future__ import annotations

import json
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, OtherSettingsError
from ..export import st_table
from ..runs.columns import list_matrix
from ..runs.files import staged_dir, write_json
from ..runs.fingerprint import folder_fingerprint, resolve_model, settings_key
from ..runs.run import Run
from .checkpoints import (
    CheckpointCallback,
    LossTally,
    latest_checkpoint,
    remove_checkpoints,
    restore,
    resumables,
    resume_folder,
)
from .config import LOSSES, TrainConfig
from .id_masking import id_labels
from .losses import GRADED, WITH_LABELS, WITH_NEGATIVES, build_loss
from .precision import has_gpu, training_bf16, warn_if_emulated
from .soft_labels import fuse, parse_teachers

MANIFEST = "hardneg_train.json"


def training_table(run: Run, loss: str, num_negatives: int | None = None, teacher_scores: str | None = None,
                   teacher_norm: str = "zscore", teacher_scale: float = 1.0,
                   graded_positives: int | None = None, graded_judged_zeros: bool = True, negatives: str = "mined",
                   generated: str | None = None) -> pa.Table:
    """The columns ``loss`` expects, built from the run: pairs for in-batch MNRL; n-tuples (queries
    with every negative; each positive its own row) for the others, with score labels for distillation:
    the filter teacher's raw scores, or with ``teacher_scores`` the named teachers' scores fused per
    row (:func:`hardneg.training.soft_labels.fuse`); graded lists (one row per query, up to
    ``graded_positives`` positives with their grades, then the judged grade-0 documents unless
    ``graded_judged_zeros`` is False, then mined negatives) for the graded losses
    (:func:`hardneg.training.graded_table.graded_table`); with ``negatives`` ``generated`` or ``both``, the
    LLM-written negatives of the folder ``generated`` in the negative slots
    (:func:`hardneg.training.generated_negatives.generated_table`)."""
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss '{loss}' (choose from {', '.join(LOSSES)})")
    if teacher_scores is not None and loss not in WITH_LABELS:
        raise ConfigError(f"teacher_scores: loss '{loss}' takes no labels (use {', '.join(WITH_LABELS)})")
    if graded_positives is not None and loss not in GRADED:
        raise ConfigError(f"graded_positives: only for the graded losses ({', '.join(GRADED)}), not '{loss}'")
    if negatives != "mined":
        from .generated_negatives import check_negative_source, generated_table

        check_negative_source(negatives, generated, loss, 0, run)
        assert generated is not None  # checked
        return generated_table(run, generated, negatives, num_negatives)
    if loss in GRADED:
        from .graded_table import graded_table

        return graded_table(run, num_negatives, graded_positives, graded_judged_zeros)
    if loss == "adore":
        from .adore import adore_table

        return adore_table(run)
    if loss not in WITH_NEGATIVES:
        return st_table(run, "pair")
    if loss == "cet":  # label = each mined negative's pooling propensity
        from .cet import cet_table

        return cet_table(run, num_negatives)
    stored = [c[len("negative_scores_"):] for c in run.negatives.column_names if c.startswith("negative_scores_")]
    teachers = parse_teachers(teacher_scores, stored) if teacher_scores is not None else []
    table = st_table(run, "n-tuple", with_scores=loss in WITH_LABELS and not teachers, score_teachers=teachers)
    n = int(run.manifest["config"]["num_negatives"])
    k = min(num_negatives or n, n)
    keep = ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(k)]
    if loss in WITH_LABELS:
        if teachers:
            scores = fuse([list_matrix(table, f"score_{t}")[:, : k + 1] for t in teachers], teacher_norm) * teacher_scale
        else:
            scores = list_matrix(table, "score")[:, : k + 1]
        label = scores[:, :1] - scores[:, 1:] if loss == "margin-mse" else scores  # kl, mnrl-kl, gist-scores
        return table.select(keep).append_column("label", pa.array(label.tolist(), pa.list_(pa.float32())))
    if loss == "mnrl-idmask":  # label = the rows' ids [query, positive, negatives...] (id_masking.id_labels)
        return table.select(keep).append_column("label", pa.array(id_labels(run, k).tolist(), pa.list_(pa.int64())))
    return table.select(keep)


def loss_settings(loss: Any) -> dict[str, Any]:
    """The loss object the trainer used, as it was built: its class and its own settings
    (``get_config_dict``, e.g. MNRL's scale and hardness_strength), for the manifest."""
    config = loss.get_config_dict() if hasattr(loss, "get_config_dict") else {}
    return {"class": type(loss).__name__, **json.loads(json.dumps(config, default=str))}


def _set_max_length(student: Any, max_length: int | None, base_path: str) -> Any:
    """Set the student's token limit for training and return the one it had (restored before saving).
    A model with no limit to set (static embeddings read every token) refuses ``max_length``."""
    full_length = student.max_seq_length
    if max_length:
        try:
            student.max_seq_length = max_length
        except AttributeError:
            raise ConfigError(f"max_length: the model {base_path} has no token limit to set") from None
    return full_length


def train(run: str | Path | Run, out: str | Path, model: str | None = None, overwrite: bool = False,
          progress: bool = True, **options: Any) -> Path:
    """Fine-tune ``model`` on a run's negatives and save a normal sentence-transformers folder at
    ``out`` with ``hardneg_train.json`` (the run it used, every setting, timings). Batches never
    hold the same text twice, so no query or document id twice (NO_DUPLICATES sampler). A GPU is used when
    present. A finished model with the same settings at ``out`` is returned as it is. Texts come
    from the run's collection snapshot (:meth:`Run.collection`), not from the dataset path.

    Args:
        run: a run folder from ``hardneg mine``, or a loaded :class:`Run`.
        out: folder for the trained model (published atomically).
        model: base model path or hub id (default: the packaged MiniLM).
        overwrite: replace a model trained with other settings at ``out``.
        progress: show the trainer's progress bars.
        **options: :class:`TrainConfig` fields: ``loss``, ``num_negatives``, ``batch_size``,
            ``epochs``, ``max_steps``, ``learning_rate``, ``max_length``, ``guide``, ``seed``, ...

    Returns:
        ``out``.

    Example::

        hardneg.train("runs/scifact", "models/mnrl-hn", loss="mnrl-hn", batch_size=32, epochs=1)
    """
    run = run if isinstance(run, Run) else Run.load(run)
    cfg = TrainConfig(run=str(run.path or "<in-memory run>"), out=str(out), model=model, **options)
    source = {"path": str(run.path) if run.path else None, "config_fingerprint": run.manifest["config_fingerprint"],
              "config": run.manifest["config"]}
    if cfg.negatives != "mined" and cfg.generated is not None:  # which negatives: in the manifest and the key
        from .generated_negatives import generated_source

        source["generated"] = generated_source(cfg.generated)
    return train_on_table(lambda: training_table(run, cfg.loss, cfg.num_negatives, cfg.teacher_scores, cfg.teacher_norm,
                                                 cfg.teacher_scale, cfg.graded_positives, cfg.graded_judged_zeros,
                                                 cfg.negatives, cfg.generated),
                          cfg, source, overwrite, progress, run=run)


def _check_graded(cfg: TrainConfig) -> None:
    """The graded losses' options belong to them only."""
    given = [name for name in ("graded_positives", "grade_temperature", "graded_in_batch", "wasserstein_form",
                               "graded_judged_zeros")
             if getattr(cfg, name) != TrainConfig.model_fields[name].default]
    if given and cfg.loss not in GRADED:
        raise ConfigError(f"{given[0]}: only for the graded losses ({', '.join(GRADED)}), not '{cfg.loss}'")
    if cfg.wasserstein_form != "list" and cfg.loss != "graded-wasserstein":
        raise ConfigError(f"wasserstein_form: only for loss 'graded-wasserstein', not '{cfg.loss}'")


def _check_run_methods(cfg: TrainConfig, run: Run | None) -> None:
    """The methods that read the run itself (refreshed negatives, ADORE) need one, and exclude each other."""
    if cfg.loss == "adore" and run is None:
        raise ConfigError("loss 'adore' needs a hardneg run (its corpus is the index)")
    if cfg.remine_every:
        if cfg.loss == "adore":
            raise ConfigError("remine_every and loss 'adore' exclude each other (adore retrieves at every step)")
        from .refresh import check_refreshable

        check_refreshable(run, cfg.loss)


def train_on_table(make_table: Any, cfg: TrainConfig, source: dict[str, Any], overwrite: bool = False,
                progress: bool = True, run: Run | None = None) -> Path:
    """Train a model on the table ``make_table()`` returns (built only when training is needed);
    ``source`` says where the rows came from and goes into the manifest and the cache key. The
    model is written to ``cfg.out`` through a staging folder, as :func:`train` does. ``run`` is the
    run the table was made from, for the methods that mine or retrieve again (``remine_every``, ``adore``)."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    cfg = cfg.model_copy(update={"bf16": training_bf16(cfg.bf16)})  # the precision used: in the key and manifest
    warn_if_emulated(bool(cfg.bf16))
    _check_run_methods(cfg, run)
    _check_graded(cfg)
    if cfg.hard_batches and cfg.query_balanced:
        raise ConfigError("hard_batches and query_balanced exclude each other (each one chooses the batches)")
    if cfg.negatives != "mined" or cfg.generated is not None:
        from .generated_negatives import check_negative_source

        check_negative_source(cfg.negatives, cfg.generated, cfg.loss, cfg.remine_every, run)
    from .hard_batches import hard_batch_sampler
    from .query_balanced import QueryBalancedBatchSampler

    base_path = resolve_model(cfg.model)
    key = settings_key(cfg.fingerprint_settings(), source.get("config_fingerprint"),
                       folder_fingerprint(base_path), metadata.version("hardneg"),
                       *([source["generated"]["fingerprint"]] if "generated" in source else []))
    out = Path(cfg.out)
    done = out / MANIFEST
    if done.exists() and not overwrite:
        if json.loads(done.read_text()).get("fingerprint") == key:
            return out
        raise OtherSettingsError(f"{out}: a model trained with other settings is there (use --overwrite)")

    t0 = time.perf_counter()
    table = make_table()
    if table.num_rows < 2:
        raise ConfigError(f"only {table.num_rows} training rows for loss '{cfg.loss}'")
    student = SentenceTransformer(base_path)
    full_length = _set_max_length(student, cfg.max_length, base_path)
    guide = SentenceTransformer(resolve_model(cfg.guide)) if cfg.guide else None
    extra: dict[str, Any] = {}
    callbacks: list[Any] = []
    loss: Any
    if cfg.loss == "adore":
        from .adore import build_adore_loss

        assert run is not None  # checked above
        loss, extra["adore_index"] = build_adore_loss(run, student, cfg.model, cfg.adore_depth, cfg.adore_negatives)
    else:
        loss = build_loss(cfg.loss, student, guide, cfg.hardness_strength, cfg.mini_batch_size,
                          cfg.teacher_temperature, cfg.student_temperature, cfg.distill_weight, cfg.infonce_weight,
                          seed=cfg.seed, mochi={"num_hard": cfg.mochi_hard, "num_mix": cfg.mochi_mix,
                                                "num_query_mix": cfg.mochi_query_mix, "beta_max": cfg.mochi_beta_max},
                          graded={"in_batch": cfg.graded_in_batch, "grade_temperature": cfg.grade_temperature,
                                  **({"form": cfg.wasserstein_form} if cfg.loss == "graded-wasserstein" else {})})
    train_loss = loss
    if cfg.loss == "mnrl-idmask":  # every (query, positive) of the table: the qrels' positives of its queries
        if "label" not in table.column_names:
            raise ConfigError("loss 'mnrl-idmask' needs document ids: train on a hardneg run")
        ids = np.array(table.column("label").to_pylist(), dtype=np.int64)
        loss.remember_positives(ids[:, 0], ids[:, 1])
    sampler: Any = BatchSamplers.NO_DUPLICATES
    if cfg.hard_batches:
        sampler = hard_batch_sampler(student, cfg.cluster_size, cfg.recluster_every)
    elif cfg.query_balanced:
        sampler = QueryBalancedBatchSampler
    # hard batches are clustered by the student when the sampler re-clusters: not restorable, not checkpointed
    checkpoints = resume_folder(out, key) if cfg.checkpoint_every and not cfg.hard_batches else None
    with staged_dir(out, overwrite=True) as staging:
        if cfg.remine_every:
            from .refresh import attach_refresh

            assert run is not None  # checked above
            k = sum(c.startswith("negative_") for c in table.column_names)
            table, train_loss, remine = attach_refresh(run, table, student, loss, cfg.remine_every, k,
                                                       staging / "_refresh", full_length if cfg.max_length else None)
            callbacks.append(remine)
        stateful, tally = resumables(loss, train_loss, *callbacks), LossTally(train_loss)
        resume_from = latest_checkpoint(checkpoints) if checkpoints else None
        earlier = 0.0
        if resume_from:
            marker = restore(resume_from, stateful)
            extra["resumed_from_step"], earlier = int(marker["step"]), float(marker["seconds"])
            tally.continue_from(marker)
        if checkpoints:
            callbacks.append(CheckpointCallback(stateful, tally, t0, earlier))
        args = SentenceTransformerTrainingArguments(
            output_dir=str(checkpoints or staging / "_trainer"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_ratio, seed=cfg.seed, data_seed=cfg.seed,
            batch_sampler=sampler, report_to="none",
            save_strategy="steps" if checkpoints else "no", save_steps=cfg.checkpoint_every or 500,
            # every 10 steps, and at least 3 points of the loss curve for a short run
            logging_steps=max(1, min(10, cfg.max_steps // 3)) if cfg.max_steps > 0 else 10,
            disable_tqdm=not progress, bf16=cfg.bf16,
            use_cpu=cfg.bf16 and not has_gpu())  # transformers refuses CPU bf16 autocast unless told
        trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=datasets.Dataset(table),
                                             loss=train_loss, callbacks=callbacks)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        shutil.rmtree(staging / "_trainer", ignore_errors=True)
        shutil.rmtree(staging / "_refresh", ignore_errors=True)
        if cfg.remine_every:
            extra["refreshes"] = remine.records
        # the training curve, for the experiment report
        extra["loss_log"] = [{"step": int(h["step"]), "loss": round(float(h["loss"]), 6)}
                             for h in trainer.state.log_history if "loss" in h]
        if cfg.max_length:
            student.max_seq_length = full_length  # a shorter training length is a training economy only
        student.save(str(staging))
        write_json(staging / MANIFEST, {
            "fingerprint": key,
            "config": cfg.model_dump(),
            "base_model_path": base_path,
            "run": source,
            "train_rows": table.num_rows,
            "columns": table.column_names,
            "steps": int(result.global_step),
            "train_loss": tally.mean,  # over every step, also those before a resume
            "train_loss_steps": tally.steps,
            "loss": loss_settings(loss),
            "device": str(student.device),
            "seconds": round(earlier + time.perf_counter() - t0, 1),
            "versions": {p: metadata.version(p) for p in ("hardneg", "sentence-transformers", "transformers", "torch")},
            **extra,
        })
    remove_checkpoints(out)
    return out
