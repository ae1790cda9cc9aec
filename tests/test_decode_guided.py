"""The ``guided`` (ZeroCap) decoder on a tiny random GPT-2 and the tiny random open_clip: shapes and limits
of what comes back, determinism, untouched models, refusals."""

from __future__ import annotations

import pytest
import torch

from t2c_monitor.decode.base import Decoder
from t2c_monitor.decode.guided import (
    GuidedDecoder,
    GuidedSettings,
    _Beam,
    _trimmed_text_features,
    _trimming_works,
)
from t2c_monitor.decode.lm import CausalLM, wrap_lm
from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.identity import ModelIdentity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = [
    "a small red circle on grass", "a large blue square in the sky", "a green triangle on the sand at night",
    "an orange star against a brick wall", "a tiny white cross on plain gray, blurry", "a big black disc in fog",
    "a purple box on a lawn in the snow", "a yellow plus sign on a sandy beach",
]
QUICK = GuidedSettings(cond_text="", beam_size=3, max_tokens=5, num_iterations=2, top_k=32)


@pytest.fixture(scope="module")
def tiny_lm() -> CausalLM:
    from transformers import GPT2Config, GPT2LMHeadModel

    from t2c_monitor.world.caption_lm import train_tokenizer

    tokenizer = train_tokenizer(CAPTIONS, vocab_size=300)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    return wrap_lm(model, tokenizer, name="tiny-gpt2")


@pytest.fixture(scope="module")
def targets(tiny_clip) -> torch.Tensor:
    return tiny_clip.encode_text(CAPTIONS[:3])


def test_one_ranked_decoded_per_vector_within_beam_size_and_max_tokens(tiny_lm, tiny_clip, targets, monkeypatch):
    written: list[list[int]] = []  # the token ids of every sentence the decoder turns into text

    def decode_ids(ids: list[int]) -> str:
        written.append(list(ids))
        return tiny_lm.tokenizer.decode(ids, skip_special_tokens=True).strip()

    monkeypatch.setattr(tiny_lm, "decode", decode_ids)
    decoder = GuidedDecoder(tiny_lm, tiny_clip, QUICK)
    assert isinstance(decoder, Decoder) and decoder.name == "guided" and decoder.clip == tiny_clip.identity
    decoded = decoder.decode(targets, space=tiny_clip.identity)
    assert len(decoded) == len(targets)
    for d in decoded:
        assert 1 <= len(d.texts) <= QUICK.beam_size
        assert all(isinstance(t, str) and t and isinstance(s, float) for t, s in d.texts)
        scores = [s for _, s in d.texts]
        assert scores == sorted(scores, reverse=True) and all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    assert written and all(1 <= len(ids) <= QUICK.max_tokens for ids in written)
    one = decoder.decode(targets[0].numpy(), space=tiny_clip.identity)  # one vector, as numpy
    assert one == decoded[:1]


def test_cond_text_starts_every_sentence(tiny_lm, tiny_clip, targets):
    settings = GuidedSettings(cond_text="a small", beam_size=2, max_tokens=3, num_iterations=1, top_k=16)
    decoded = GuidedDecoder(tiny_lm, tiny_clip, settings).decode(targets[:1], space=tiny_clip.identity)
    assert decoded[0].texts and all(t.startswith("a small") for t, _ in decoded[0].texts)


def test_deterministic_and_the_models_are_left_untouched(tiny_lm, tiny_clip, targets):
    lm_before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    clip_before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    decoder = GuidedDecoder(tiny_lm, tiny_clip, QUICK)
    first = decoder.decode(targets, space=tiny_clip.identity)
    with torch.inference_mode():  # a caller in inference mode gets the same sentences
        second = decoder.decode(targets.clone(), space=tiny_clip.identity)
    assert first == second
    reversed_ = decoder.decode(targets.flip(0), space=tiny_clip.identity)
    assert reversed_ == first[::-1], "nothing of one vector's decode leaks into the next"
    for model, before in ((tiny_lm.model, lm_before), (tiny_clip.model, clip_before)):
        after = model.state_dict()
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
        assert all(p.grad is None for p in model.parameters())


def test_the_shifted_cache_moves_the_next_token_toward_what_clip_prefers(tiny_lm, tiny_clip, targets):
    """One guided step: the cross-entropy between CLIP's target over the candidates and the LM's
    next-token distribution falls from the unshifted to the shifted cache."""
    decoder = GuidedDecoder(tiny_lm, tiny_clip, GuidedSettings(cond_text="a small red", top_k=32))
    ids = decoder._prompt
    target = torch.nn.functional.normalize(targets[0], dim=0)
    with torch.inference_mode(False), torch.enable_grad():
        past = decoder._prefix_cache(torch.tensor([ids[:-1]]))
        last = torch.tensor([[ids[-1]]])
        with torch.no_grad():
            log_p = torch.log_softmax(decoder._forward(last, past)[0], dim=-1)
        beams = [_Beam(ids, 0.0, 0)]
        log_q, carried = decoder._shifted(last, past, log_p, beams, target, {})
    candidates = log_p.topk(32, dim=-1).indices
    goal = decoder._clip_target(beams, candidates, target, {})
    assert (goal * log_q.gather(1, candidates)).sum() > (goal * log_p.gather(1, candidates)).sum() + 0.3
    assert len(carried) == len(past) and carried[0][0].shape[2] == len(ids)


def test_vectors_of_another_space_or_shape_are_refused(tiny_lm, tiny_clip, targets):
    decoder = GuidedDecoder(tiny_lm, tiny_clip, QUICK)
    other = ModelIdentity("open_clip", "other", None, "f" * 64, tiny_clip.dim)
    with pytest.raises(SpaceMismatchError, match="this decoder was built for"):
        decoder.decode(targets, space=other)
    with pytest.raises(SpaceMismatchError):
        decoder.decode(targets, space=None)
    with pytest.raises(ValueError, match=r"vectors must be \(n, 32\)"):
        decoder.decode(torch.ones(1, 5), space=tiny_clip.identity)


@pytest.mark.parametrize("field, value", [
    ("beam_size", 0), ("beam_size", 2.5), ("max_tokens", 0), ("num_iterations", -1), ("top_k", 0),
    ("stepsize", -0.1), ("grad_norm_factor", float("nan")), ("clip_scale", -1.0), ("ce_scale", float("inf")),
    ("clip_loss_temperature", 0.0), ("fusion_factor", 1.5), ("end_factor", 0.0), ("repetition_penalty", -1.0),
    ("forbidden_factor", 0.0), ("cond_text", None), ("forbidden_tokens", "."), ("forbidden_tokens", [1]),
])
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        GuidedSettings(**{field: value})


def test_forbidden_tokens_must_be_single_tokens(tiny_lm, tiny_clip):
    assert GuidedSettings(forbidden_tokens=[" red", "."]).forbidden_tokens == (" red", ".")  # as YAML gives them
    with pytest.raises(ValueError, match="forbidden_tokens"):
        GuidedDecoder(tiny_lm, tiny_clip, GuidedSettings(forbidden_tokens=("a photo of a circle",)))


def test_clip_texts_encoded_on_their_own_length_match_encode_text(tiny_clip):
    assert _trimming_works(tiny_clip)
    texts = ["a", "a small red circle", "an image of a large blue square in the sky"]
    with torch.inference_mode():
        trimmed = _trimmed_text_features(tiny_clip, texts).float()
    assert torch.allclose(trimmed, tiny_clip.encode_text(texts), atol=1e-5)
