"""The teacher a spec names: ``bm25[:stem]``, ``dense[:MODEL]``, ``e5[:enpt]`` or ``hybrid[:A+B...]``, built from the
parsed settings of a :class:`~hardneg.config.MineConfig` (used by mining, the audit and evaluation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..progress import SILENT, Reporter
from ..runs.cache import Cache
from ..runs.fingerprint import env_cache_dir
from .teacher_scores import teacher_name
from .teachers import BM25Teacher, DenseTeacher, HybridTeacher, Teacher
from .teachers.e5 import E5Teacher

if TYPE_CHECKING:
    from ..collection import Collection
    from ..config import MineConfig


def build_teacher(cfg: MineConfig) -> Teacher:
    """The teacher ``cfg.teacher`` names, each dense member with the encoder ``cfg.encoder`` resolves to
    for its model and the dense settings of ``cfg`` (prompts, max length, batch size, search, device,
    seed, embedding dtype). Nothing is loaded or encoded until the teacher's ``prepare``.

    Args:
        cfg: parsed mining settings; only the teacher and dense settings are read.

    Returns:
        A :class:`BM25Teacher`, a :class:`DenseTeacher` or a :class:`HybridTeacher` of them.

    Example::

        from hardneg.config import MineConfig
        from hardneg.candidates.build import build_teacher

        teacher = build_teacher(MineConfig(dataset="scifact", teacher="hybrid:bm25+dense"))
    """
    members = [_member(cfg, kind, option, name) for name, (kind, option) in zip(cfg.teacher.names(), cfg.teacher.members)]
    if cfg.teacher.kind == "hybrid":
        return HybridTeacher(members, fusion=cfg.fusion)
    return members[0]


def _member(cfg: MineConfig, kind: str, option: str | None, name: str) -> Teacher:
    if kind == "bm25":
        return BM25Teacher(stemmer="english" if option == "stem" else None, name=name)
    if kind == "e5":
        return E5Teacher(option or "original", batch_size=cfg.batch_size, search=cfg.search, name=name, seed=cfg.seed)
    return DenseTeacher(option, cfg.query_prompt, cfg.doc_prompt, cfg.max_length, batch_size=cfg.batch_size,
                        search=cfg.search, device=cfg.device, name=name, seed=cfg.seed,
                        encoder=cfg.encoder_for(option), embedding_dtype=cfg.embedding_dtype)


def build_scorers(cfg: MineConfig) -> list[Teacher]:
    """The extra teachers of ``cfg.score_with`` (soft labels only), each named for its column
    (:func:`hardneg.candidates.teacher_scores.teacher_name`). A dense one uses the packaged prompts
    of its model (not the mining teacher's ``query_prompt``); a cross-encoder is loaded and checked here."""
    if cfg.score_with is None:
        return []
    out: list[Teacher] = []
    for kind, option in cfg.score_with.members:
        name = teacher_name(kind, option)
        if kind == "cross-encoder":  # GPL's pseudo-labels: checked now, before any mining
            from .teachers.cross_encoder import CrossEncoderTeacher

            ce = CrossEncoderTeacher(str(option), batch_size=cfg.batch_size, device=cfg.device, name=name)
            ce.check(str(env_cache_dir(cfg.cache_dir)))
            out.append(ce)
        elif kind == "dense":
            out.append(DenseTeacher(option, batch_size=cfg.batch_size, search=cfg.search, device=cfg.device,
                                    name=name, seed=cfg.seed, encoder=cfg.encoder_for(option),
                                    embedding_dtype=cfg.embedding_dtype))
        else:
            out.append(_member(cfg, kind, option, name))
    return out


def members_of(teacher: Teacher) -> list[Teacher]:
    """The teachers that score candidates: a hybrid's members, else the teacher itself."""
    return list(teacher.teachers) if isinstance(teacher, HybridTeacher) else [teacher]


def near_vectors(cfg: MineConfig, members: list[Teacher], col: Collection, cache: Cache,
                 reporter: Reporter = SILENT) -> tuple[Any, str | None]:
    """Document embeddings for the embedding rules (``near_positive``, ``knn_positive``) and the model
    they come from: the dense teacher's (already prepared), else ``cfg.near_model``'s, from the cache."""
    dense = next((m for m in members if isinstance(m, DenseTeacher)), None)
    if dense is not None:
        return dense.doc_vectors(), dense.describe().get("model")
    dense = DenseTeacher(cfg.near_model, batch_size=cfg.batch_size, device=cfg.device,
                         encoder=cfg.encoder_for(cfg.near_model))
    dense.resolve(cache)
    vectors = dense.embed(col.doc_texts, dense.doc_prompt or "", cache, "documents", reporter)
    return vectors, dense.describe().get("model")
