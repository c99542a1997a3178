"""Shared fixtures: the real collections in ../shared/data, slices of them, and small real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (the README's test command: two workers on CI's two cores) each worker, and every CLI it
# starts, gets its share of the cores: two workers each spinning two OpenMP threads on two cores slow each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(_threads))

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HARDNEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"shared collection missing: {path} (set HARDNEG_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return shared("scifact")


@pytest.fixture(scope="session")
def scifact_train(scifact_dir):
    import hardneg

    return hardneg.load(scifact_dir, "train")


@pytest.fixture(scope="session")
def scifact_slice(scifact_train):
    """30 judged train queries, their positives and 250 other abstracts."""
    return scifact_train.slice(30, extra_docs=250, seed=0)


@pytest.fixture(scope="session")
def slice_dir(scifact_slice, tmp_path_factory) -> Path:
    """The SciFact slice written as a BEIR folder, for CLI tests."""
    import hardneg

    return hardneg.save_beir(scifact_slice, tmp_path_factory.mktemp("scifact-slice"), "train")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def static_model(tmp_path_factory) -> str:
    """A real, fast sentence-transformers model: the packaged 64-d static embeddings
    (tokenlearn-static-model), saved as an ST folder so it loads like any other model."""
    import static_model as pkg
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    folder = Path(pkg.__file__).parent / "model"
    model = SentenceTransformer(modules=[StaticEmbedding.from_model2vec(str(folder))])
    out = tmp_path_factory.mktemp("static-model")
    model.save(str(out))
    return str(out)


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    return shared("cranfield")


@pytest.fixture(scope="session")
def hardneg_exe() -> str:
    """The installed ``hardneg`` console script (the venv's bin next to this Python, else PATH), as a
    user runs it. Missing means the package is not installed: a failure, not a skip."""
    import shutil
    import sys

    here = Path(sys.executable).parent / "hardneg"
    exe = str(here) if here.exists() else shutil.which("hardneg")
    if exe is None:
        pytest.fail(f"the 'hardneg' console script is not installed (not in {here.parent} nor on PATH)")
    return exe


@pytest.fixture
def fake_llm():
    """A factory of real OpenAI-compatible servers on loopback (tests/fake_llm.py), all shut down after the test."""
    from fake_llm import FakeLLM

    servers: list[FakeLLM] = []

    def make(**kwargs) -> FakeLLM:
        servers.append(FakeLLM(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def server(fake_llm):
    """The generation tests' name for :func:`fake_llm`."""
    return fake_llm


EVIDENCE_FILTER = "near_duplicate:0.005+near_positive:0.5"
"""Low enough that both similarity rules drop candidates of the SciFact slice (its abstracts share few
word 3-shingles: the highest Jaccard to a positive is ~0.014)."""


@pytest.fixture(scope="session")
def evidence_run(slice_dir, cache_dir, tmp_path_factory) -> Path:
    """A BM25 run of the slice with both pairwise similarity rules on (their evidence is stored)."""
    from inspect_helpers import mine

    return mine(slice_dir, tmp_path_factory.mktemp("evidence") / "run", cache_dir, EVIDENCE_FILTER)
