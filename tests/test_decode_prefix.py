"""The ``prefix`` decoder on a tiny random-weight open_clip and a tiny GPT-2 trained here: it learns
to write captions back from their CLIP text embeddings (text-only training), saves and loads through
``transformers`` and ``safetensors`` with identical output, refuses other spaces, touches no network."""

from __future__ import annotations

import socket

import pytest
import torch

from t2c_monitor.decode.lm import load_causal_lm, wrap_lm
from t2c_monitor.decode.prefix import PrefixDecoder, PrefixTraining, read_corpus, train_prefix_decoder
from t2c_monitor.errors import ConfigError, ModelLoadError, SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, same_space

COLOURS = ("red", "green", "blue", "yellow", "purple")
SHAPES = ("circle", "square", "triangle", "star")
CAPTIONS = [f"a {c} {s}" for c in COLOURS for s in SHAPES]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A one-layer GPT-2 with a BPE tokenizer trained on the captions, saved as Hugging Face saves models."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from t2c_monitor.world.caption_lm import train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer(CAPTIONS * 5, vocab_size=300)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    out = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def trained(tiny_clip, lm_dir):
    lm = load_causal_lm(lm_dir)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    training = PrefixTraining(steps=250, batch_size=20, lr=3e-3, lm_lr=3e-3, noise_norm=0.05, noise_norm_max=None)
    decoder = train_prefix_decoder(tiny_clip, lm, CAPTIONS, training)
    return lm, before, decoder.with_options(beam_size=2)


def test_captions_come_back_from_their_text_embeddings(trained, tiny_clip):
    _, _, decoder = trained
    embeddings = tiny_clip.encode_text(CAPTIONS)
    decoded = decoder.decode(embeddings, space=tiny_clip.identity)
    exact = sum(d.text == caption for d, caption in zip(decoded, CAPTIONS, strict=True))
    assert exact >= 0.8 * len(CAPTIONS), [d.text for d in decoded]
    assert all(len(d.texts) <= 2 and d.texts == sorted(d.texts, key=lambda p: -p[1]) for d in decoded)


def test_training_leaves_the_callers_lm_alone_and_records_both_identities(trained, tiny_clip):
    lm, before, decoder = trained
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert decoder.lm.identity.weights_sha256 != lm.identity.weights_sha256  # the decoder's LM was fine-tuned
    assert decoder.clip == tiny_clip.identity
    assert decoder.recipe["base_lm"]["weights_sha256"] == lm.identity.weights_sha256


def test_a_frozen_lm_is_used_as_it_is(tiny_clip, lm_dir):
    lm = load_causal_lm(lm_dir)
    decoder = train_prefix_decoder(tiny_clip, lm, CAPTIONS, PrefixTraining(steps=3, batch_size=4, train_lm=False))
    assert decoder.lm is lm and decoder.lm.identity == load_causal_lm(lm_dir).identity


def test_saved_and_loaded_by_the_production_loaders_decodes_the_same_offline(trained, tiny_clip, tmp_path,
                                                                               monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, _, decoder = trained
    decoder.save(tmp_path / "dec")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "dec" / "lm") is not None
    assert {"mapper.net.0.weight", "text_mean"} <= set(load_file(str(tmp_path / "dec" / "mapper.safetensors")))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network touched: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    loaded = PrefixDecoder.load(tmp_path / "dec").with_options(beam_size=2)
    vectors = tiny_clip.encode_text(CAPTIONS[:6])
    assert [d.texts for d in loaded.decode(vectors, space=tiny_clip.identity)] == \
        [d.texts for d in decoder.decode(vectors, space=tiny_clip.identity)]
    assert loaded.clip == decoder.clip and same_space(loaded.lm.identity, decoder.lm.identity)


def test_a_replaced_lm_or_tensor_file_is_refused(trained, tmp_path):
    _, _, decoder = trained
    decoder.save(tmp_path / "dec")
    other = wrap_lm(decoder.lm.model.__class__(decoder.lm.model.config), decoder.lm.tokenizer)
    other.model.save_pretrained(tmp_path / "dec" / "lm")
    with pytest.raises(ModelLoadError, match="not the one this decoder was trained with"):
        PrefixDecoder.load(tmp_path / "dec")
    decoder.save(tmp_path / "dec2")
    (tmp_path / "dec2" / "mapper.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="checksum"):
        PrefixDecoder.load(tmp_path / "dec2")


def test_other_spaces_shapes_and_settings_are_refused(trained, tiny_clip, tmp_path):
    _, _, decoder = trained
    other = ModelIdentity("open_clip", "other", None, "e" * 64, 32)
    with pytest.raises(SpaceMismatchError, match="trained for"):
        decoder.decode(torch.ones(1, 32), space=other)
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        decoder.decode(torch.ones(1, 7), space=tiny_clip.identity)
    with pytest.raises(ValueError, match="image_mean"):
        decoder.with_options(image_mean=torch.ones(3))
    with pytest.raises(ValueError, match="unknown prefix decoder options"):
        decoder.with_options(temperature=2)
    with pytest.raises(ValueError, match="steps"):
        PrefixTraining(steps=0)
    (tmp_path / "one.txt").write_text("just one caption\n\n")
    with pytest.raises(ConfigError, match="holds 1 captions"):
        read_corpus(tmp_path / "one.txt")


def test_t2c_decoder_train_writes_a_decoder_the_loader_reads(tiny_clip_config, lm_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS) + "\n")
    run = CliRunner().invoke(app, ["decoder", "train", "--clip", f"open_clip:{tiny_clip_config}", "--lm", str(lm_dir),
                                   "--corpus", str(tmp_path / "captions.txt"), "--out", str(tmp_path / "dec"),
                                   "--steps", "3", "--batch-size", "4", "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["captions"] == len(CAPTIONS) and result["steps"] == 3 and result["lm"]["kind"] == "transformers"
    loaded = PrefixDecoder.load(tmp_path / "dec")
    assert same_space(loaded.clip, result["clip"]) and same_space(loaded.lm.identity, result["lm"])
    missing = CliRunner().invoke(app, ["decoder", "train", "--clip", f"open_clip:{tiny_clip_config}", "--lm",
                                       str(lm_dir), "--corpus", str(tmp_path / "nope.txt"),
                                       "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "Cannot read the caption corpus" in missing.output


def test_language_models_load_from_directories_and_hub_names_only_when_cached(lm_dir, tmp_path, monkeypatch):
    lm = load_causal_lm(lm_dir)
    assert lm.identity.kind == "transformers" and lm.identity.dim == 32 and lm.start_token_id == 1
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm(tmp_path / "no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="offline"):
        load_causal_lm("gpt2")
