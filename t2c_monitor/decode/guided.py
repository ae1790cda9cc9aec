"""The ``guided`` decoder: a causal LM steered toward a CLIP vector while it writes (ZeroCap).

ZeroCap (Tewel et al., CVPR 2022) captions an image with a frozen LM and a frozen CLIP and no
training. The sentence grows by beam search, one token at a time; before each token the LM's
context cache (every layer's keys and values of the tokens so far, but the last) is nudged so that
the next-token distribution favours tokens that bring the text closer to the target vector:

1. the LM on the context gives the unshifted next-token distribution ``p``;
2. zero deltas are added to the cached keys and values; ``num_iterations`` times: the last token
   is run on the shifted cache, giving ``q``; the ``top_k`` most likely candidates under ``q``
   each extend the text so far, and the CLIP text tower embeds those texts; the target over the
   candidates is ``softmax(cos(text, vector) / clip_loss_temperature)``; the loss is
   ``clip_scale * CE(target, log q[candidates]) + ce_scale * KL(q || p)`` (the second term keeps
   the text fluent); each delta takes the step ``-stepsize * g / |g| ** grad_norm_factor``
   (its gradient ``g``, normalised per beam);
3. beam search extends each beam by the fused distribution ``q ** fusion_factor * p ** (1 -
   fusion_factor)`` (renormalised), with end tokens multiplied by ``end_factor`` (forbidden at the
   first token, so no sentence is empty); the shifted cache is carried on to the next token, as
   ZeroCap does.

Beams are ranked by mean log-probability of the fused distribution while they grow; a beam ends
at an end token (the tokenizer's EOS, and ``.`` where it is one token) or after ``max_tokens``.
The finished sentences (``cond_text`` included) are then ranked, as ZeroCap picks its caption, by
the cosine of their CLIP text embedding with the vector: that cosine is the score.

The candidate texts of every beam are embedded in one batch per iteration, each text once per
decode; an open_clip ``CLIP`` text tower (causal, pooled at the end token) runs on the tokens up
to the batch's longest text only, which gives the same embeddings several times faster.

When the mean of the image side is known (``image_mean``: a baseline's, or the images being
decoded), the target is that mean subtracted and renormalised: CLIP's image embeddings share a
large common component (the modality gap) that otherwise biases every candidate's score toward the
texts nearest the image cone. (Centring the text side too would shift every candidate's score by
the same amount, which the softmax ignores.)

Neither model is trained: gradients reach only the deltas (``torch.autograd.grad``), and every
decode starts from nothing but the settings and the two models.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.decode.base import Decoded, as_rows, check_space
from t2c_monitor.decode.lm import CausalLM
from t2c_monitor.device import autocast
from t2c_monitor.encoders.base import ClipModel
from t2c_monitor.identity import ModelIdentity

KV = list[tuple[Tensor, Tensor]]  # per layer: keys and values, (beams, heads, positions, head_dim)
RECENT = 4  # tokens the repetition penalty looks back over (ZeroCap's)
TINY = 1e-15


@dataclass(frozen=True)
class GuidedSettings:
    """ZeroCap's knobs; the defaults are those of its published code (``run.py`` / ``CLIPTextGenerator``;
    ``max_tokens`` is its ``target_seq_length``), tuned there for GPT-2 medium and CLIP ViT-B/32.

    ``top_k`` candidates per beam are scored by CLIP (ZeroCap fixes 512); ``forbidden_tokens`` are
    texts of single LM tokens whose probability is divided by ``forbidden_factor`` (ZeroCap ships a
    GPT-2 list; none here by default); ``repetition_penalty`` divides the probability of the last
    4 tokens (1 = off, ZeroCap's default). ``clip_weight`` (0 = off, pure ZeroCap) adds CLIP's
    preference among each step's ``top_k`` tokens to their fused log-probabilities, for LMs and CLIPs
    too small for the gradient steps alone to steer the words.

    With a small vocabulary (the shapes world's caption LM has 476 tokens) ``top_k`` 512 lets CLIP
    choose among every token, grammatical or not, and it favours noncommittal ones ("photo", "of");
    there a handful of candidates (``top_k`` 4, ``clip_loss_temperature`` 0.05) names far more.
    """

    cond_text: str = "Image of a"
    beam_size: int = 5
    max_tokens: int = 15
    num_iterations: int = 5
    stepsize: float = 0.3
    grad_norm_factor: float = 0.9
    clip_scale: float = 1.0
    ce_scale: float = 0.2
    clip_loss_temperature: float = 0.01
    top_k: int = 512
    fusion_factor: float = 0.99
    end_factor: float = 1.01
    repetition_penalty: float = 1.0
    forbidden_tokens: tuple[str, ...] = ()
    forbidden_factor: float = 20.0
    clip_weight: float = 0.0  # not ZeroCap's: > 0 also adds weight * log CLIP preference to each step's top_k

    def __post_init__(self) -> None:
        if not isinstance(self.cond_text, str):
            raise ValueError(f"cond_text must be a string, got {self.cond_text!r}")
        forbidden = self.forbidden_tokens
        if not isinstance(forbidden, (tuple, list)) or not all(isinstance(t, str) for t in forbidden):
            raise ValueError(f"forbidden_tokens must be a sequence of strings, got {forbidden!r}")
        object.__setattr__(self, "forbidden_tokens", tuple(forbidden))  # a list from a config file is fine
        lowest = {"beam_size": 1, "max_tokens": 1, "num_iterations": 0, "top_k": 1}
        for name, low in lowest.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        positive = ("clip_loss_temperature", "end_factor", "repetition_penalty", "forbidden_factor")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type != "float":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if f.name in positive and value <= 0:
                raise ValueError(f"{f.name} must be > 0, got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value!r}")
        if self.fusion_factor > 1:
            raise ValueError(f"fusion_factor must be in [0, 1], got {self.fusion_factor!r}")


@dataclass
class _Beam:
    ids: list[int]  # start token, cond_text, generated tokens
    score: float  # summed log-probability of the generated tokens under the fused distribution
    length: int  # generated tokens

    @property
    def mean(self) -> float:
        return self.score / max(self.length, 1)


class GuidedDecoder:
    """Sentences for vectors of one CLIP space, written by ``lm`` under the guidance of ``clip`` (ZeroCap)."""

    name = "guided"

    def __init__(self, lm: CausalLM, clip: ClipModel, settings: GuidedSettings = GuidedSettings(), *,
                 image_mean: Tensor | np.ndarray | None = None) -> None:
        if not isinstance(settings, GuidedSettings):
            raise ValueError(f"settings must be GuidedSettings, got {type(settings).__name__}")
        self.lm, self.clip_model, self.settings = lm, clip, settings
        self.image_mean = None if image_mean is None else torch.as_tensor(image_mean, dtype=torch.float32).cpu()
        if self.image_mean is not None and self.image_mean.shape != (clip.dim,):
            raise ValueError(f"image_mean must have shape ({clip.dim},), got {tuple(self.image_mean.shape)}")
        start = lm.start_token_id
        if start is None:
            raise ValueError("the language model's tokenizer has neither a BOS nor an EOS token to start from")
        self._prompt = [int(start), *lm.encode(settings.cond_text)]
        ends = {lm.end_token_id} if lm.end_token_id is not None else set()
        period = lm.encode(".")
        if len(period) == 1:
            ends.add(period[0])
        if not ends:
            raise ValueError("the language model has no end token (neither EOS nor a one-token '.')")
        self._ends = sorted(int(e) for e in ends)
        self._banned = sorted(set(int(i) for i in lm.tokenizer.all_special_ids) - ends)  # BOS, PAD, ...
        self._forbidden = sorted(set(_single_tokens(lm, settings.forbidden_tokens)))
        self._trim = _trimming_works(clip)
        self._cache_arg = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"

    @property
    def clip(self) -> ModelIdentity:
        return self.clip_model.identity

    def with_image_mean(self, image_mean: Tensor | np.ndarray | None) -> GuidedDecoder:
        return GuidedDecoder(self.lm, self.clip_model, self.settings, image_mean=image_mean)

    def decode(self, vectors: Tensor | np.ndarray, *, space: ModelIdentity | dict | None) -> list[Decoded]:
        """Each row of ``vectors`` (vectors of the CLIP space ``space``) as up to ``beam_size`` sentences,
        ranked by the cosine of their CLIP text embedding with the row."""
        check_space(self.clip, space, built="this decoder was built for")
        rows = as_rows(vectors, self.clip_model.dim)
        self.lm.model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            targets = F.normalize(rows.clone(), dim=1)
            if self.image_mean is not None:  # centred: what sets this vector apart from the image side's mean
                targets = F.normalize(targets - self.image_mean, dim=1)
            return [self._decode_one(target) for target in targets]

    # ------------------------------------------------------------------------------------------
    # one vector

    def _decode_one(self, target: Tensor) -> Decoded:
        s, device = self.settings, self.lm.device
        embedded: dict[str, Tensor] = {}  # CLIP embeddings of texts met in this decode only
        active = [_Beam(list(self._prompt), 0.0, 0)]
        finished: list[_Beam] = []
        past = self._prefix_cache(torch.tensor([self._prompt[:-1]], device=device)) if len(self._prompt) > 1 else None
        for step in range(s.max_tokens):
            last = torch.tensor([[b.ids[-1]] for b in active], device=device)
            with torch.no_grad():
                logits, unshifted_past = self._forward(last, past)
            log_p = F.log_softmax(logits.float(), dim=-1)
            if past is not None and s.num_iterations > 0 and s.clip_scale + s.ce_scale > 0:
                log_q, past = self._shifted(last, past, log_p, active, target, embedded)
            else:
                log_q, past = log_p, unshifted_past
            fused = self._fused(log_q, log_p, active, step)
            if s.clip_weight > 0:
                fused = self._clip_weighted(fused, active, target, embedded)
            active, finished, parents = self._advance(active, finished, fused)
            if not active:
                break
            index = torch.tensor(parents, device=device)
            past = [(k.index_select(0, index), v.index_select(0, index)) for k, v in past]
        return self._ranked(finished + active, target, embedded)

    def _shifted(self, last: Tensor, past: KV, log_p: Tensor, beams: list[_Beam], target: Tensor,
                 embedded: dict[str, Tensor]) -> tuple[Tensor, KV]:
        """ZeroCap's update of the context cache: the shifted next-token log-probs and the shifted cache
        (with the last token's keys and values appended) to carry on."""
        s = self.settings
        deltas = [torch.zeros_like(t, requires_grad=True) for kv in past for t in kv]
        for _ in range(s.num_iterations):
            logits, _ = self._forward(last, _shift(past, deltas))
            log_q = F.log_softmax(logits.float(), dim=-1)
            loss = s.ce_scale * (log_q.exp() * (log_q - log_p)).sum()
            if s.clip_scale > 0:
                candidates = log_q.detach().topk(min(s.top_k, log_q.shape[-1]), dim=-1).indices
                goal = self._clip_target(beams, candidates, target, embedded).to(log_q.device)
                loss = loss - s.clip_scale * (goal * log_q.gather(1, candidates)).sum()
            grads = torch.autograd.grad(loss, deltas)
            deltas = [(d - s.stepsize * g / _beam_norm(g) ** s.grad_norm_factor).detach().requires_grad_()
                      for d, g in zip(deltas, grads, strict=True)]
        with torch.no_grad():
            logits, carried = self._forward(last, _shift(past, deltas))
        return F.log_softmax(logits.float(), dim=-1), carried

    def _clip_target(self, beams: list[_Beam], candidates: Tensor, target: Tensor,
                     embedded: dict[str, Tensor]) -> Tensor:
        """``softmax(cos(text so far + candidate, target) / T)`` per beam over its candidates; every
        beam's new texts are embedded in one call of the CLIP text tower."""
        seqs = [b.ids[1:] + [c] for b, row in zip(beams, candidates.tolist(), strict=True) for c in row]
        texts = [t.strip() for t in self.lm.tokenizer.batch_decode(seqs, skip_special_tokens=True)]
        self._embed(texts, embedded)
        with torch.no_grad():
            sims = torch.stack([embedded[t] for t in texts]) @ target
            return F.softmax(sims.view(candidates.shape) / self.settings.clip_loss_temperature, dim=-1)

    def _embed(self, texts: Iterable[str], embedded: dict[str, Tensor]) -> None:
        """Add the unit CLIP text embeddings of the texts not yet in ``embedded``, in one batch."""
        new = list(dict.fromkeys(t for t in texts if t not in embedded))
        if not new:
            return
        if self._trim:
            with torch.inference_mode(), autocast(self.clip_model.device):
                vectors = _trimmed_text_features(self.clip_model, new).float().cpu()
        else:
            vectors = self.clip_model.encode_text(new, batch_size=len(new))
        embedded.update(zip(new, F.normalize(vectors.clone(), dim=1), strict=True))

    def _clip_weighted(self, fused: Tensor, beams: list[_Beam], target: Tensor, embedded: dict[str, Tensor]) -> Tensor:
        """The fused log-probs of each beam's ``top_k`` tokens plus ``clip_weight`` times the log of CLIP's
        preference among them (the other tokens are dropped), renormalised: a direct CLIP term in the
        choice of each token, as MAGIC search does, on top of ZeroCap's shifted context."""
        s = self.settings
        candidates = fused.topk(min(s.top_k, fused.shape[-1]), dim=-1).indices
        goal = self._clip_target(beams, candidates, target, embedded).to(fused.device)
        mixed = torch.full_like(fused, -math.inf)
        mixed.scatter_(1, candidates, fused.gather(1, candidates) + s.clip_weight * torch.log(goal + TINY))
        return F.log_softmax(mixed, dim=-1)

    def _fused(self, log_q: Tensor, log_p: Tensor, beams: list[_Beam], step: int) -> Tensor:
        """Log of ``q^f * p^(1-f)`` with end, repetition and forbidden factors, renormalised per beam."""
        s = self.settings
        probs = F.softmax(s.fusion_factor * log_q + (1 - s.fusion_factor) * log_p, dim=-1)
        probs[:, self._banned] = 0.0
        probs[:, self._ends] = 0.0 if step == 0 else probs[:, self._ends] * s.end_factor
        if self._forbidden:
            probs[:, self._forbidden] /= s.forbidden_factor
        if s.repetition_penalty != 1.0:
            for row, beam in zip(probs, beams, strict=True):
                recent = sorted(set(beam.ids[-RECENT:]))
                row[recent] /= s.repetition_penalty
        return torch.log(probs / probs.sum(dim=-1, keepdim=True))

    def _advance(self, active: list[_Beam], finished: list[_Beam], fused: Tensor
                 ) -> tuple[list[_Beam], list[_Beam], list[int]]:
        """One beam-search step: the best ``beam_size`` of the finished beams and every extension, by
        mean log-probability; returns the new active beams, the finished ones and each active beam's parent."""
        top = fused.topk(min(self.settings.beam_size, fused.shape[-1]), dim=-1)
        pool: list[tuple[_Beam, int]] = [(b, -1) for b in finished]
        for parent, (beam, values, tokens) in enumerate(zip(active, top.values.tolist(), top.indices.tolist(),
                                                            strict=True)):
            pool += [(_Beam(beam.ids + [t], beam.score + v, beam.length + 1), parent)
                     for v, t in zip(values, tokens, strict=True) if math.isfinite(v)]
        pool.sort(key=lambda item: item[0].mean, reverse=True)  # stable: ties keep their order
        kept = pool[: self.settings.beam_size]
        done = [b for b, parent in kept if parent < 0 or b.ids[-1] in self._ends]
        growing = [(b, parent) for b, parent in kept if parent >= 0 and b.ids[-1] not in self._ends]
        return [b for b, _ in growing], done, [parent for _, parent in growing]

    def _ranked(self, beams: list[_Beam], target: Tensor, embedded: dict[str, Tensor]) -> Decoded:
        """The beams' distinct texts ranked, as ZeroCap picks its caption, by CLIP cosine with the target."""
        beams = sorted(beams, key=lambda b: b.mean, reverse=True)
        texts = list(dict.fromkeys(self.lm.decode(b.ids[1:]) for b in beams))
        if not texts:
            return Decoded([])
        self._embed(texts, embedded)
        scored = [(t, float(embedded[t] @ target)) for t in texts]
        return Decoded(sorted(scored, key=lambda item: item[1], reverse=True))

    # ------------------------------------------------------------------------------------------
    # the LM and its cache

    def _forward(self, tokens: Tensor, past: KV | None) -> tuple[Tensor, KV]:
        """Next-token logits after ``tokens`` on the cache ``past``, and the cache with ``tokens`` appended."""
        out = self.lm.model(input_ids=tokens, use_cache=True, **{self._cache_arg: _as_cache(past)})
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        return out.logits[:, -1], [(item[0], item[1]) for item in cache]

    def _prefix_cache(self, tokens: Tensor) -> KV:
        with torch.no_grad():
            return self._forward(tokens, None)[1]


def _as_cache(past: KV | None) -> Any:
    if past is None:
        return None
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(past):
        cache.update(keys, values, layer)
    return cache


def _shift(past: KV, deltas: list[Tensor]) -> KV:
    return [(k + deltas[2 * i], v + deltas[2 * i + 1]) for i, (k, v) in enumerate(past)]


def _beam_norm(grad: Tensor) -> Tensor:
    """The gradient's norm per beam (first dimension), shaped to divide it."""
    return grad.flatten(1).norm(dim=1).add(TINY).view(-1, *([1] * (grad.ndim - 1)))


def _trimmed_text_features(clip: ClipModel, texts: list[str]) -> Tensor:
    """``clip.model.encode_text`` of an open_clip ``CLIP`` (causal text mask, pooled at the end token)
    run on the tokens up to the batch's last end token only: the same embeddings, a few times faster
    for short texts, as no position attends to the padding after it."""
    model = clip.model
    tokens = clip.tokenizer(texts).to(clip.device)
    ends = tokens.argmax(dim=-1) if model.text_pool_type == "argmax" else (tokens == model.text_eos_id).int().argmax(-1)
    n = int(ends.max()) + 1
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(len(texts), device=x.device), ends]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Module) else x @ projection


def _trimming_works(clip: ClipModel) -> bool:
    """Whether ``_trimmed_text_features`` applies to this CLIP and gives what ``encode_text`` gives."""
    model = clip.model
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if (not all(hasattr(model, a) for a in needed) or getattr(model, "attn_mask", None) is None
            or getattr(model, "text_pool_type", None) not in ("argmax", "eos")
            or (model.text_pool_type == "eos" and getattr(model, "text_eos_id", None) is None)):
        return False
    probe = ["a", "a photo of a small red circle on the grass"]
    try:
        with torch.inference_mode(), autocast(clip.device):
            trimmed = _trimmed_text_features(clip, probe).float().cpu()
    except (RuntimeError, TypeError, AttributeError, IndexError):
        return False
    return torch.allclose(trimmed, clip.encode_text(probe), atol=1e-4, rtol=1e-3)


def _single_tokens(lm: CausalLM, texts: Iterable[str]) -> list[int]:
    ids = []
    for text in texts:
        encoded = lm.encode(text)
        if len(encoded) != 1:
            raise ValueError(f"forbidden_tokens: {text!r} is {len(encoded)} tokens of this LM, not one")
        ids.append(int(encoded[0]))
    return ids
