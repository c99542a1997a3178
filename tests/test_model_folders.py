"""Model folders as sentence-transformers 6 saves them (what `hardneg train` writes): hardneg reads their
token limit and pooling without loading them, so a trained model is encoded like the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardneg.candidates.encoders import _st_layout, graph_ready, resolve_encoder
from hardneg.runs.fingerprint import read_st_config, resolve_model


@pytest.fixture(scope="module")
def saved_minilm(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    out = tmp_path_factory.mktemp("saved") / "minilm"
    SentenceTransformer(resolve_model(None)).save(str(out))
    return out


def test_a_saved_model_keeps_its_token_limit_and_pooling(saved_minilm):
    pooling = json.loads((saved_minilm / "1_Pooling" / "config.json").read_text())
    assert "pooling_mode" in pooling  # the sentence-transformers 6 layout this test is about
    assert read_st_config(saved_minilm)["max_seq_length"] == 256 == read_st_config(resolve_model(None))["max_seq_length"]
    assert _st_layout(saved_minilm) == _st_layout(Path(resolve_model(None))) == {"pooling": "mean_tokens", "normalize": True}
    assert graph_ready(saved_minilm)


def test_a_saved_model_gets_the_encoder_the_base_model_gets(saved_minilm):
    """`auto` must not fall back to torch for a folder the exported encoders can run."""
    assert resolve_encoder("auto", "cpu", saved_minilm) == resolve_encoder("auto", "cpu", resolve_model(None))
