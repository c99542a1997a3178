"""Batched generation in process with transformers: many prompts through the model in one forward pass, each
sampled with its own seed, on a GPU when there is one.

The ``hf:`` backend of :class:`~hardneg.generation.client.TextGenerator` (``--llm hf:MODEL``). MODEL is a model
folder, a Hugging Face id, a ``.gguf`` file (transformers de-quantises it; the converted model is kept in the
cache folder, so the slow conversion happens once) or ``gemma3-270m``. llama.cpp in process (``--llm PATH.gguf``)
runs one prompt at a time; this backend fills a batch of ``--concurrency`` prompts, left-padded, and calls
``model.generate`` once for them.

**Seeds per row.** Sampling is done by :class:`SeededSampling`, a logits processor that draws each row's token
from its own counter-based stream (``seed``, step) instead of torch's global generator, then hands it to greedy
decoding. No draw depends on the other rows, so only the numerics of a batch can change a row's text. On a CPU
in fp32 they did not: the same queries, byte for byte, at batch 1, 4, 8 and 16 (benchmarks/generate_batching.py).
In bf16 they do: on an H200, 55 of 64 queries differed between batch 1 and batch 32 (on a CPU in bf16, 12 of 16
between batch 1 and 16), and on the H200 two runs at batch 32 differed from each other too. On a GPU, as with an
HTTP server, a run is reproduced by its completion cache (a rerun replays every answer), not by generating again.
Temperature 0 is greedy decoding.

Example::

    lm = TransformersLM.load("/models/qwen2.5-7b-instruct", cache_dir="/home/me/.cache/hardneg")
    out = lm.generate(["Document: ...\\nQuery:"] * 2, Sampling(), seeds=[1, 2])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.files import staged_dir
from ..runs.fingerprint import file_fingerprint, folder_fingerprint
from .completion import Completion, Sampling

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STEP = np.uint64(0xD1B54A32D192ED69)


def row_uniforms(seeds: np.ndarray, step: int) -> np.ndarray:
    """One uniform number in [0, 1) per row for decoding step ``step``: splitmix64 of (seed, step), so that a
    row's draws depend on its seed and the step only."""
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64) * _GOLDEN + np.uint64(step + 1) * _STEP
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


class SeededSampling:
    """A transformers logits processor: temperature, nucleus (top-p) and a draw from each row's own stream
    (:func:`row_uniforms`); the drawn token is the only one left, so greedy decoding takes it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, prompt_length: int):
        self.seeds = np.asarray(seeds, dtype=np.uint64)
        self.temperature, self.top_p, self.prompt_length = temperature, top_p, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = int(input_ids.shape[1]) - self.prompt_length
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        p, order = probs.sort(dim=-1, descending=True, stable=True)
        p = p * ((p.cumsum(-1) - p) < self.top_p)  # the smallest head whose mass reaches top_p (never empty)
        cum = p.cumsum(-1)
        u = torch.from_numpy(row_uniforms(self.seeds, step)).to(cum.device, cum.dtype)
        pick = torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(1), right=True).clamp(max=cum.shape[1] - 1)
        token = order.gather(1, pick)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(1, token, 0.0)


class StopStrings:
    """A transformers stopping criterion: a row is done once its generated text holds one of ``stops``
    (transformers' own ``stop_strings`` re-reads the whole vocabulary on every call: 0.7 s for Gemma's 262k)."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length
        self.tail = max(len(s.encode()) for s in stops)  # a token holds at least one byte

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        # only the last few tokens: a stop string that ended earlier has already ended its row
        start = max(self.prompt_length, int(input_ids.shape[1]) - self.tail)
        texts = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


@dataclass
class TransformersLM:
    """A causal LM and its tokenizer, loaded once, with what identifies it (the cache's key)."""

    model: Any
    tokenizer: Any
    name: str
    fingerprint: str
    dtype: str
    device: str

    _lock = threading.Lock()

    @classmethod
    def load(cls, target: str, cache_dir: str | Path) -> TransformersLM:
        """``target`` without its ``hf:``: a folder, a ``.gguf`` file (converted once into
        ``cache_dir/models/hf-<sha256>``) or a hub id. Raises what transformers raises."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(target).expanduser()
        gpu = torch.cuda.is_available()
        dtype = torch.bfloat16 if gpu else torch.float32
        if path.is_file():
            sha = file_fingerprint(path, cache_dir)
            folder = Path(cache_dir) / "models" / f"hf-{sha[:16]}"
            if not (folder / "config.json").is_file():
                with staged_dir(folder, overwrite=True) as tmp:
                    kw = {"gguf_file": path.name}
                    AutoTokenizer.from_pretrained(str(path.parent), **kw).save_pretrained(str(tmp))
                    converted = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
                    # de-quantised on load: the weights are plain tensors, saved as such
                    converted.hf_quantizer = None
                    if hasattr(converted.config, "quantization_config"):
                        del converted.config.quantization_config
                    converted.save_pretrained(str(tmp))
            source, fingerprint = str(folder), f"gguf:{sha}"
        elif path.is_dir():
            source, fingerprint = str(path), f"folder:{folder_fingerprint(path, cache_dir)}"
        else:
            source, fingerprint = target, f"hub:{target}"
        tok = AutoTokenizer.from_pretrained(source)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to("cuda" if gpu else "cpu").eval()
        if fingerprint.startswith("hub:"):
            fingerprint += f"@{getattr(model.config, '_commit_hash', None)}"
        return cls(model, tok, path.name or target, fingerprint, str(dtype).removeprefix("torch."),
                   "cuda" if gpu else "cpu")

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> list[Completion]:
        """One completion per prompt, all in one ``generate`` call."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
        width = int(enc["input_ids"].shape[1])
        eos = self.model.generation_config.eos_token_id
        eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        config = GenerationConfig(max_new_tokens=sampling.max_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(eos_ids) or None)
        processors = LogitsProcessorList([SeededSampling(seeds, sampling.temperature, sampling.top_p, width)]
                                         if sampling.temperature > 0 else [])
        stopping = StoppingCriteriaList([StopStrings(self.tokenizer, sampling.stop, width)] if sampling.stop else [])
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, logits_processor=processors,
                                      stopping_criteria=stopping)
        prompt_tokens = enc["attention_mask"].sum(1).tolist()
        return [self._completion(tokens, sampling.stop, eos_ids, int(prompt_tokens[row]))
                for row, tokens in enumerate(out[:, width:].tolist())]  # a batch's rows: decoding is per text

    def _completion(self, tokens: list[int], stops: tuple[str, ...], eos_ids: set[int], prompt_tokens: int) -> Completion:
        """One row's completion. A row that stopped before the batch's longest is padded after its end (with
        end-of-text where the tokenizer has no pad token): the tokens counted are those up to the end-of-text or
        the token that completed a stop string, whichever came first."""
        end = next((i for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut < 0:
            pad = self.tokenizer.pad_token_id
            n = end
            while n and tokens[n - 1] == pad:  # pad tokens are special: they are not in the text either
                n -= 1
            return Completion(text, "stop" if end < len(tokens) else "length", prompt_tokens, n + (end < len(tokens)))
        lo, hi = 1, end  # the shortest prefix whose text holds a stop string (holding one only grows)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in self.tokenizer.decode(tokens[:mid], skip_special_tokens=True) for s in stops):
                hi = mid
            else:
                lo = mid + 1
        return Completion(text[:cut], "stop", prompt_tokens, lo)
