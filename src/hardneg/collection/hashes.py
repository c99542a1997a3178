"""collection_hashes: the corpus-sized hash arrays mining needs, cached under the collection's fingerprints.

Mining needs, for every document, the group of its normalised text (exact copies share one) and a
64-bit hash of its id, and a 64-bit hash of each query id. Each is a Python loop over the corpus,
so they are computed once per corpus (and once per query set) and kept in the cache; a rerun on the
same data reads them back instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..decisions.filters import normalised_text_hash
from ..runs.cache import Cache
from ..runs.fingerprint import settings_key
from ..sampling import id_hashes
from .types import Collection

KIND = "hashes"  # the cache folder
# What is hashed, part of each key: a change to a hash function must change its description.
CORPUS_HASHES = "text_group: np.unique inverse of blake2b-64 of casefolded, whitespace-collapsed text; " \
                "doc_hash: blake2b-64 of the id"
QUERY_HASHES = "query_hash: blake2b-64 of the id"


class CollectionHashes(NamedTuple):
    text_group: np.ndarray  # int64 per document; documents with the same normalised text share it
    doc_hash: np.ndarray    # uint64 per document, of its id
    query_hash: np.ndarray  # uint64 per query of the collection (not only the judged), of its id


def collection_hashes(col: Collection, cache: Cache) -> CollectionHashes:
    """The text groups and id hashes of a collection's documents and queries, from the cache when
    they are there, else computed and stored: under the corpus fingerprint for the document arrays,
    under the queries fingerprint for the query array.

    Args:
        col: the collection.
        cache: the cache (``mine``'s ``cache_dir``); arrays go to ``<cache>/hashes/<key>.npz``.

    Returns:
        ``CollectionHashes(text_group, doc_hash, query_hash)``, equal to a fresh computation with
        ``normalised_text_hash`` and ``id_hashes``.

    Example:
        ::

            from hardneg import load
            from hardneg.collection.hashes import collection_hashes
            from hardneg.runs.cache import Cache

            h = collection_hashes(load("data/scifact", split="train"), Cache("/tmp/hardneg-cache"))
            h.doc_hash.shape  # (5183,)
    """
    corpus_key = settings_key(KIND, CORPUS_HASHES, col.corpus_fingerprint())
    docs = cache.load_arrays(KIND, corpus_key)
    if docs is None or docs["text_group"].shape != (col.num_docs,) or docs["doc_hash"].shape != (col.num_docs,):
        docs = {"text_group": np.unique(normalised_text_hash(col.doc_texts), return_inverse=True)[1].astype(np.int64),
                "doc_hash": id_hashes(col.doc_ids)}
        cache.save_arrays(KIND, corpus_key, **docs)
    queries_key = settings_key(KIND, QUERY_HASHES, col.queries_fingerprint())
    queries = cache.load_arrays(KIND, queries_key)
    if queries is None or queries["query_hash"].shape != (col.query_ids.size,):
        queries = {"query_hash": id_hashes(col.query_ids)}
        cache.save_arrays(KIND, queries_key, **queries)
    return CollectionHashes(docs["text_group"], docs["doc_hash"], queries["query_hash"])
