"""Text encoders for the dense teacher. All return float32 rows for a list of texts:

- ``torch``: sentence-transformers in fp32 (the reference);
- ``bf16``: the same model cast to bfloat16 (native on CPUs with AVX512-BF16/AMX and on GPUs);
- ``onnx`` / ``onnx-int8``: the transformer exported with ``torch.onnx`` (once, into the cache, no
  download) and run by onnxruntime, fp32 or with int8 dynamic quantisation of its MatMuls;
- ``openvino``: the transformer converted by OpenVINO from the local torch model (once, into the cache,
  fp16 weights) and run by OpenVINO's CPU plugin, in bf16 where the CPU has it natively.
The exported paths import neither torch nor sentence-transformers once the export exists, so start-up
and memory stay lean.

``auto`` picks ``openvino`` (when installed) or else ``bf16`` on a CPU that runs bf16 natively, and
``torch`` elsewhere, a GPU included (see docs/benchmarks.md for the measured speed, peak memory and
nDCG@10 of each)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

ENCODERS = ("auto", "torch", "bf16", "onnx", "onnx-int8", "openvino")
EXPORTED = ("onnx", "onnx-int8", "openvino")  # encoders that run a graph exported once into the cache
EncodeFn = Callable[[list[str]], np.ndarray]


def cpu_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_encoder(kind: str, device: str | None, model_path: str | Path | None = None) -> str:
    """The concrete encoder for ``kind`` on this machine. ``auto`` uses bf16 only for CPU encoding on a
    CPU with native bf16: through OpenVINO when it is installed (faster than torch there and under half
    its memory), else torch bf16; on a GPU it is fp32 torch, because bf16 was slower on an H200 (MiniLM is
    not compute-bound there) and changed more negatives. A model that OpenVINO cannot take from its
    folder (see :func:`graph_ready`) gets torch bf16. Deciding imports nothing."""
    if kind not in ENCODERS:
        raise ConfigError(f"unknown encoder '{kind}' (use {', '.join(ENCODERS)})")
    if kind == "auto":
        on_cpu = device == "cpu" or (device is None and not Path("/proc/driver/nvidia/gpus").exists())
        if not (on_cpu and cpu_bf16()):
            return "torch"
        if importlib.util.find_spec("openvino") is None or (model_path is not None and not graph_ready(model_path)):
            return "bf16"
        return "openvino"
    return kind


def resolve_for_model(kind: str, device: str | None, model: str | None) -> str:
    """:func:`resolve_encoder` for a model as the user names it (a folder, a hub id, None = the
    packaged MiniLM). The model's folder is looked up only where the answer depends on it (``auto``
    choosing OpenVINO), so deciding stays as cheap as :func:`resolve_encoder`."""
    encoder = resolve_encoder(kind, device)
    if kind == "auto" and encoder == "openvino":
        from ..runs.fingerprint import resolve_model

        encoder = resolve_encoder(kind, device, resolve_model(model))
    return encoder


def graph_ready(model_path: str | Path) -> bool:
    """Whether the exported encoders can run this model folder: Transformer, Pooling[, Normalize]
    modules and a fast tokenizer (``tokenizer.json``)."""
    try:
        _st_layout(Path(model_path))
    except (ConfigError, OSError, ValueError, IndexError):
        return False
    return (Path(model_path) / "tokenizer.json").exists()


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


_POOLING_NAMES = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens", "lasttoken": "lasttoken"}


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
    if "pooling_mode" in cfg:  # sentence-transformers 6: one "pooling_mode" name
        modes = [_POOLING_NAMES.get(str(cfg["pooling_mode"]), str(cfg["pooling_mode"]))]
    if (len(modes) != 1 or modes[0] not in _POOLING_NAMES.values() or cfg.get("pooling_mode_mean_sqrt_len_tokens")
            or cfg.get("pooling_mode_weightedmean_tokens")):
        raise ConfigError(f"{pool_dir / 'config.json'}: pooling {cfg} is not one of cls, mean, max, lasttoken "
                          "(use --encoder torch)")
    return {"pooling": modes[0], "normalize": "Normalize" in kinds}


def _export_body(model_path: Path) -> tuple[Any, dict[str, Any]]:
    """The transformer as a module taking (input_ids, attention_mask[, token_type_ids]) and returning
    ``last_hidden_state``, with a sample batch to trace it. Imports torch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(model_path)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_path))
    batch = tok(["hardneg export", "a second, longer sample sentence"], padding=True, return_tensors="pt")
    sample = {n: batch[n] for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch}

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    return Body(), sample


def export_onnx(model_path: Path, folder: Path, int8: bool) -> Path:
    """Export the transformer to ``folder/model.onnx`` (and an int8 copy), atomically, once."""
    target = folder / ("model-int8.onnx" if int8 else "model.onnx")
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        import torch

        body, sample = _export_body(model_path)
        names = list(sample)
        tmp = folder / f".model.onnx.{os.getpid()}.tmp"
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        torch.onnx.export(body, tuple(sample.values()), str(tmp), input_names=names,
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


def export_openvino(model_path: Path, folder: Path) -> Path:
    """Convert the transformer with OpenVINO into ``folder/openvino/model.xml`` (fp16 weights, dynamic
    batch and length), once; the folder is renamed into place whole, so a killed export leaves nothing."""
    target = _openvino_xml(folder)
    if target.exists():
        return target
    import openvino as ov
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    body, sample = _export_body(model_path)
    with torch.no_grad():
        graph = ov.convert_model(body, example_input=sample)
    tmp = folder / f".openvino.{os.getpid()}.tmp"
    ov.save_model(graph, str(tmp / "model.xml"), compress_to_fp16=True)
    try:
        os.replace(tmp, target.parent)
    except OSError:  # another process finished the same export first
        if not target.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _openvino_xml(folder: Path) -> Path:
    return folder / "openvino" / "model.xml"


def export_graph(kind: str, model_path: Path, folder: Path) -> Path:
    """The exported graph of an :data:`EXPORTED` encoder, made now if missing (in this process)."""
    if kind == "openvino":
        return export_openvino(model_path, folder)
    return export_onnx(model_path, folder, int8=kind == "onnx-int8")


class GraphEncoder:
    """Tokenizer, batching and pooling of an ST model folder around an exported transformer graph;
    subclasses run the graph (``_hidden``: token features of one batch)."""

    def __init__(self, model_path: Path, max_length: int | None, normalize: bool, batch_size: int):
        from tokenizers import Tokenizer

        self.layout = _st_layout(model_path)
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(max_length or 512))
        pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        # Lengths padded to a multiple of 16: few distinct shapes, so the runtimes' per-shape kernel caches and
        # arenas stay small (without it OpenVINO grew ~100 MB over SciFact's short texts).
        self.tokenizer.enable_padding(pad_id=pad_id, pad_to_multiple_of=16)
        self.normalize, self.batch_size = normalize, batch_size

    def _hidden(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        out = []
        for s in range(0, len(texts), self.batch_size):
            batch = [prompt + t for t in texts[s:s + self.batch_size]]
            enc = self.tokenizer.encode_batch(batch)
            feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                     "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                     "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
            hidden = self._hidden(feeds)
            out.append(_pool(hidden, feeds["attention_mask"], self.layout["pooling"]))
        emb = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32)


def _threads() -> int:
    return len(os.sched_getaffinity(0))


class OnnxEncoder(GraphEncoder):
    """The exported transformer in onnxruntime (fp32 or int8)."""

    def __init__(self, model_path: str | Path, int8: bool, export_dir: Path, max_length: int | None,
                 normalize: bool, batch_size: int, threads: int | None = None):
        import onnxruntime as ort

        model_path = Path(model_path)
        super().__init__(model_path, max_length, normalize, batch_size)
        onnx_file = export_onnx(model_path, export_dir, int8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _threads()
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def _hidden(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: feeds[k] for k in self.inputs})[0]


class OpenVinoEncoder(GraphEncoder):
    """The converted transformer in OpenVINO's CPU plugin, bf16 where the CPU has it natively. Requests
    hold at most 8 texts: as fast as 32 on the measured CPU, at about half the peak memory."""

    def __init__(self, model_path: str | Path, export_dir: Path, max_length: int | None, normalize: bool,
                 batch_size: int, threads: int | None = None):
        import openvino as ov

        model_path = Path(model_path)
        super().__init__(model_path, max_length, normalize, min(batch_size, 8))
        xml = _openvino_xml(export_dir)
        if not xml.exists():  # in a child process, so that this one never imports torch
            cmd = [sys.executable, "-m", "hardneg.candidates.encoders", "openvino", str(model_path), str(export_dir)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ConfigError(f"{model_path}: OpenVINO export failed (use --encoder bf16):\n{done.stderr[-2000:]}")
        config = {"INFERENCE_PRECISION_HINT": "bf16" if cpu_bf16() else "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or _threads()}
        self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]

    def _hidden(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer({k: feeds[k] for k in self.inputs})[self.compiled.outputs[0]]


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
                 normalize: bool, batch_size: int, export_dir: Path) -> STEncoder | GraphEncoder:
    """An encoder of a resolved ``kind`` (see :func:`resolve_encoder`)."""
    if kind in EXPORTED:
        if device not in (None, "cpu"):
            raise ConfigError(f"encoder '{kind}' runs on CPU only; use --encoder torch or bf16 on '{device}'")
        if kind == "openvino":
            return OpenVinoEncoder(model_path, export_dir, max_length, normalize, batch_size)
        return OnnxEncoder(model_path, kind == "onnx-int8", export_dir, max_length, normalize, batch_size)
    return STEncoder(model_path, kind, device, max_length, normalize, batch_size)


if __name__ == "__main__":  # python -m hardneg.candidates.encoders openvino MODEL_DIR EXPORT_DIR
    if sys.argv[1:2] != ["openvino"] or len(sys.argv) != 4:
        raise SystemExit("usage: python -m hardneg.candidates.encoders openvino MODEL_DIR EXPORT_DIR")
    export_openvino(Path(sys.argv[2]), Path(sys.argv[3]))
