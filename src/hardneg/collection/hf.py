"""load_hf: a Hugging Face dataset (an in-memory ``datasets`` object, a hub id or a local dataset
folder), of pairs or in the MTEB/BEIR layout, as a Collection."""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from .builder import Builder, add_corpus, add_qrels_rows, add_queries
from .pairs import add_pairs
from .types import Collection


def load_hf(dataset: Any, split: str = "train", query_column: str | None = None,
            positive_column: str | None = None, revision: str | None = None,
            strict: bool = False) -> Collection:
    """Load from Hugging Face: a ``datasets.Dataset`` / ``DatasetDict`` of pairs, or a hub id or local
    dataset folder, either of pairs or in the MTEB/BEIR layout (configs ``corpus``, ``queries`` and
    ``default`` for qrels; BEIR's ``<id>-qrels`` companion repository is tried too).

    Args:
        dataset: a ``datasets.Dataset`` or ``DatasetDict``, a hub id or a local dataset folder.
        split: the split of a ``DatasetDict`` or of the hub dataset (for MTEB/BEIR: of the qrels).
        query_column: for pairs, the query column (default: found by name, see :func:`load_pairs`).
        positive_column: for pairs, the positive column (default: found by name).
        revision: a hub revision (branch, tag or commit).
        strict: make an empty document an error instead of a warning.

    Returns:
        The Collection; ``source`` records the dataset, split, revision and the datasets'
        fingerprints.

    Example:
        ::

            from hardneg import load_hf

            col = load_hf("mteb/scifact", split="test")
    """
    import datasets as hfds

    if isinstance(dataset, hfds.DatasetDict):
        if split not in dataset:
            raise DataError("<DatasetDict>", f"no split '{split}' (available: {', '.join(dataset)})")
        dataset = dataset[split]
    if isinstance(dataset, hfds.Dataset):
        b = Builder(strict=strict)
        name = f"<datasets.Dataset {dataset._fingerprint}>"
        add_pairs(b, enumerate(dataset, start=1), name, query_column, positive_column)
        return b.build({"kind": "hf-object", "path": name, "split": split,
                        "checksums": {"fingerprint": dataset._fingerprint}})
    name = str(dataset)
    try:
        configs = hfds.get_dataset_config_names(name, revision=revision)
    except Exception as exc:  # noqa: BLE001 - the hub and the loader raise many types; each becomes a DataError
        raise DataError(name, f"cannot open Hugging Face dataset ({type(exc).__name__}: {exc})") from None
    if "corpus" in configs and "queries" in configs:
        b = Builder(strict=strict)

        def rows(config: str, split_name: str | None = None, repo: str = name) -> Any:
            d = hfds.load_dataset(repo, config, revision=revision)
            part = d[split_name] if split_name else d[next(iter(d))]
            return part

        corpus = rows("corpus")
        queries = rows("queries")
        tag = f"hf:{name}"
        add_corpus(b, enumerate(corpus, start=1), f"{tag}/corpus")
        add_queries(b, enumerate(queries, start=1), f"{tag}/queries")
        try:
            qrels = hfds.load_dataset(name, "default", split=split, revision=revision)
            qtag = f"{tag}/default[{split}]"
        except Exception:  # noqa: BLE001 - no "default" qrels config: BEIR's separate -qrels repo
            qrels = hfds.load_dataset(f"{name}-qrels", split=split, revision=revision)
            qtag = f"hf:{name}-qrels[{split}]"
        add_qrels_rows(b, enumerate(qrels, start=1), qtag)
        fps = {"corpus": corpus._fingerprint, "queries": queries._fingerprint, "qrels": qrels._fingerprint}
        return b.build({"kind": "hf", "path": name, "split": split, "revision": revision, "checksums": fps})
    d = hfds.load_dataset(name, split=split, revision=revision)
    col = load_hf(d, split, query_column, positive_column, strict=strict)
    col.source.update({"kind": "hf", "path": name, "revision": revision})
    return col

