"""Text encoders for the dense teacher. All return float32 rows for a list of texts:

- ``torch``: sentence-transformers in fp32 (the reference);
- ``bf16``: the same model cast to bfloat16 (native on CPUs with AVX512-BF16/AMX and on GPUs);
- ``onnx`` / ``onnx-int8``: the transformer exported with ``torch.onnx`` (once, into the cache, no
  download) and run by onnxruntime, fp32 or with int8 dynamic quantisation of its MatMuls. This path
  imports neither torch nor sentence-transformers once the export exists, so start-up stays lean.

``auto`` picks ``bf16`` on a CPU that runs it natively and ``torch`` elsewhere, a GPU included (see
docs/benchmarks.md for the measured speed and nDCG@10 of each)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

ENCODERS = ("auto", "torch", "bf16", "onnx", "onnx-int8")
EncodeFn = Callable[[list[str]], np.ndarray]


def cpu_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_encoder(kind: str, device: str | None) -> str:
    """The concrete encoder for ``kind`` on this machine. ``auto`` is bf16 only for CPU encoding on a
    CPU with native bf16 (2.45x faster there); on a GPU it is fp32 torch, because bf16 was slower on an
    H200 (MiniLM is not compute-bound there) and changed more negatives. Deciding needs no torch import."""
    if kind not in ENCODERS:
        raise ConfigError(f"unknown encoder '{kind}' (use {', '.join(ENCODERS)})")
    if kind == "auto":
        on_cpu = device == "cpu" or (device is None and not Path("/proc/driver/nvidia/gpus").exists())
        return "bf16" if on_cpu and cpu_bf16() else "torch"
    return kind


class STEncoder:
    """sentence-transformers' own ``encode`` (fp32 or bf16 weights)."""

    def __init__(self, model_path: str | Path, kind: str, device: str | None, max_length: int | None,
                 normalize: bool, batch_size: int):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path), device=device)
        if kind == "bf16":
            import torch

            self.model.to(torch.bfloat16)
        if max_length:
            self.model.max_seq_length = int(max_length)
        self.normalize, self.batch_size = normalize, batch_size

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        out = self.model.encode(texts, batch_size=self.batch_size, prompt=prompt or None,
                                normalize_embeddings=self.normalize, convert_to_tensor=True,
                                show_progress_bar=False)
        emb = out.float().cpu().numpy()
        if self.normalize:  # bf16 rows normalised in bf16 are off unit length by ~1e-3
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb


def _st_layout(model_path: Path) -> dict[str, Any]:
    """Pooling of a Transformer -> Pooling [-> Normalize] folder; anything else needs ``torch``."""
    modules = json.loads((model_path / "modules.json").read_text()) if (model_path / "modules.json").exists() else []
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Normalize",) for k in kinds[2:]):
        raise ConfigError(f"{model_path}: modules {kinds} are not Transformer, Pooling[, Normalize]; "
                          "the onnx encoders support only that layout (use --encoder torch)")
    pool_dir = model_path / modules[1].get("path", "1_Pooling")
    cfg = json.loads((pool_dir / "config.json").read_text())
    modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "lasttoken")
             if cfg.get(f"pooling_mode_{m}")]
    if len(modes) != 1 or cfg.get("pooling_mode_mean_sqrt_len_tokens") or cfg.get("pooling_mode_weightedmean_tokens"):
        raise ConfigError(f"{pool_dir / 'config.json'}: pooling {cfg} is not one of cls, mean, max, lasttoken "
                          "(use --encoder torch)")
    return {"pooling": modes[0], "normalize": "Normalize" in kinds}


def export_onnx(model_path: Path, folder: Path, int8: bool) -> Path:
    """Export the transformer to ``folder/model.onnx`` (and an int8 copy), atomically, once."""
    target = folder / ("model-int8.onnx" if int8 else "model.onnx")
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        import torch
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(str(model_path)).eval()
        tok = AutoTokenizer.from_pretrained(str(model_path))
        sample = tok(["hardneg export", "a second, longer sample sentence"], padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

        class Body(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return self.model(**dict(zip(names, args))).last_hidden_state

        tmp = folder / f".model.onnx.{os.getpid()}.tmp"
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        torch.onnx.export(Body(), tuple(sample[n] for n in names), str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
        os.replace(tmp, fp32)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / f".model-int8.onnx.{os.getpid()}.tmp"
        # Per-channel weights, MatMuls only: per-tensor int8 lost too much (cosine to fp32 ~0.92).
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
        os.replace(tmp, target)
    return target


class OnnxEncoder:
    """The exported transformer in onnxruntime, with the tokenizer and pooling of the model folder."""

    def __init__(self, model_path: str | Path, int8: bool, export_dir: Path, max_length: int | None,
                 normalize: bool, batch_size: int, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path = Path(model_path)
        self.layout = _st_layout(model_path)
        onnx_file = export_onnx(model_path, export_dir, int8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(max_length or 512))
        pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.enable_padding(pad_id=pad_id)
        self.normalize, self.batch_size = normalize, batch_size

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        out = []
        for s in range(0, len(texts), self.batch_size):
            batch = [prompt + t for t in texts[s:s + self.batch_size]]
            enc = self.tokenizer.encode_batch(batch)
            feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                     "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                     "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
            hidden = self.session.run(None, {k: feeds[k] for k in self.inputs})[0]
            out.append(_pool(hidden, feeds["attention_mask"], self.layout["pooling"]))
        emb = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32)


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    if mode == "mean_tokens":
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if mode == "cls_token":
        return hidden[:, 0]
    if mode == "max_tokens":
        return np.where(m > 0, hidden, -1e9).max(axis=1)
    last = mask.sum(axis=1) - 1  # lasttoken, right padding
    return hidden[np.arange(hidden.shape[0]), last]


def load_encoder(kind: str, model_path: str | Path, *, device: str | None, max_length: int | None,
                 normalize: bool, batch_size: int, export_dir: Path) -> STEncoder | OnnxEncoder:
    """An encoder of a resolved ``kind`` (see :func:`resolve_encoder`)."""
    if kind in ("onnx", "onnx-int8"):
        if device not in (None, "cpu"):
            raise ConfigError(f"encoder '{kind}' runs on CPU only; use --encoder torch or bf16 on '{device}'")
        return OnnxEncoder(model_path, kind == "onnx-int8", export_dir, max_length, normalize, batch_size)
    return STEncoder(model_path, kind, device, max_length, normalize, batch_size)
