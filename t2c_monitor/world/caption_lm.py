"""The world's caption language model: a small GPT-2 with a tokenizer trained here on captions.

It is the decoder of concept-to-text. For now it is trained as a plain caption LM; a later issue
conditions it on CLIP vectors by prepending prefix embeddings, so the embedding width ``n_embd``
is recorded in ``prefix.json`` next to the model (a CLIP vector of ``clip_dim`` maps to
``prefix_length`` embeddings of width ``n_embd``).

Saved with ``save_pretrained``; loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
PREFIX_FILE = "prefix.json"


@dataclass(frozen=True)
class LmTraining:
    """Size and schedule of the caption LM."""

    steps: int
    batch_size: int = 64
    lr: float = 3e-3
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 48


def train_tokenizer(captions: Sequence[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on the captions (exact round trip of any text)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(captions, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tokenizer.token_to_id(BOS)), (EOS, tokenizer.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=48)


def train_caption_lm(captions: Sequence[str], training: LmTraining, seed: int, progress=None):
    """Train tokenizer and GPT-2 on captions; returns (model, tokenizer, losses)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(captions)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=training.n_positions, n_embd=training.n_embd,
                        n_layer=training.n_layer, n_head=training.n_head, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    encoded = tokenizer(list(captions), padding=True, truncation=True, max_length=training.n_positions,
                        return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for step in range(training.steps):
        index = torch.randint(0, len(ids), (training.batch_size,), generator=generator)
        width = int(mask[index].sum(dim=1).max())
        for group in optimizer.param_groups:
            group["lr"] = training.lr * 0.5 * (1.0 + math.cos(math.pi * step / training.steps))
        out = model(input_ids=ids[index, :width], attention_mask=mask[index, :width], labels=labels[index, :width])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.item()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return model, tokenizer, losses


def save_caption_lm(model, tokenizer, out_dir: Path, clip_dim: int) -> Path:
    """``save_pretrained`` the model and tokenizer, plus ``prefix.json`` for CLIP-prefix conditioning."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / PREFIX_FILE).write_text(json.dumps({
        "n_embd": model.config.n_embd,
        "clip_dim": clip_dim,
        "note": "condition on a CLIP vector by mapping it to prefix embeddings of width n_embd "
                "and passing them as inputs_embeds before the caption tokens",
    }, indent=2))
    return out_dir


def load_caption_lm(directory: Path):
    """(model, tokenizer) through the transformers Auto classes, as any Hugging Face model loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
