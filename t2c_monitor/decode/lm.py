"""Causal language models for the sentence decoders, loaded the way Hugging Face models load.

A spec is a hub name (``gpt2``, ``distilgpt2``) or a local directory written by ``save_pretrained``
(the shapes world's caption LM). Both go through ``AutoModelForCausalLM`` and ``AutoTokenizer``;
a hub name whose files are not cached fails with a message when the hub is offline, as the
encoders do. The identity hashes the loaded weights, so a decoder trained with one LM refuses
another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from t2c_monitor.encoders.base import state_dict_sha256
from t2c_monitor.encoders.hub import hub_offline
from t2c_monitor.errors import ModelLoadError
from t2c_monitor.identity import ModelIdentity

DEFAULT_LM = "gpt2"


@dataclass
class CausalLM:
    """A causal LM, its tokenizer and its identity (``dim`` is the width of its token embeddings)."""

    model: Any
    tokenizer: Any
    identity: ModelIdentity

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def width(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def end_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def start_token_id(self) -> int | None:
        """The token a text starts with: BOS where the tokenizer has one, else EOS (GPT-2's habit)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def identity_of(model: Any, name: str, weights: str | None) -> ModelIdentity:
    return ModelIdentity(kind="transformers", name=name, weights=weights, weights_sha256=state_dict_sha256(model),
                         dim=int(model.get_input_embeddings().weight.shape[1]))


def wrap_lm(model: Any, tokenizer: Any, name: str = "in-memory", weights: str | None = None) -> CausalLM:
    """A ``CausalLM`` around a model and tokenizer already in memory (its identity is hashed here)."""
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer, identity=identity_of(model, name, weights))


def load_causal_lm(spec: str | Path = DEFAULT_LM, device: str | torch.device | None = None) -> CausalLM:
    """The LM of ``spec`` (hub name or local ``save_pretrained`` directory) through the Auto classes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = str(spec)
    local = Path(text).expanduser()
    is_dir = local.is_dir()
    if not is_dir and (text.startswith((".", "/", "~")) or local.suffix):
        raise ModelLoadError(f"Language model directory {local} does not exist: pass a directory written by "
                             "save_pretrained, or a hub name such as gpt2.")
    source = str(local.resolve()) if is_dir else text
    try:
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=is_dir or hub_offline())
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=is_dir or hub_offline())
    except OSError as exc:
        where = f"directory {source}" if is_dir else f"hub name {source}"
        hint = ("the hub is offline (HF_HUB_OFFLINE): cache the model first, or pass a local directory"
                if hub_offline() and not is_dir else "check the name, or pass a local directory")
        raise ModelLoadError(f"Cannot load a causal language model from {where}: {exc.__class__.__name__}; {hint}.") \
            from exc
    if device is not None:
        model = model.to(device)
    model.eval()
    name = local.name if is_dir else text
    return CausalLM(model=model, tokenizer=tokenizer, identity=identity_of(model, name, source))
