"""The shapes world: deterministic generation, shift specs, the CLI, and the quick world's models.

The quick world is built ONCE per session (``quick_world`` fixture, in a tmp models dir) and then
loaded through the production loaders (open_clip, timm, transformers via ``t2c_monitor.encoders``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from t2c_monitor.errors import ConfigError, NotFittedError
from t2c_monitor.world import EFFECTS, FACTORS, generate, parse_shift
from t2c_monitor.world.generate import sample_scenes

# ---------------------------------------------------------------------------------------------
# generator


def test_generation_is_deterministic_under_a_seed():
    a, b, c = generate(24, seed=7), generate(24, seed=7), generate(24, seed=8)
    assert a.images.shape == (24, 64, 64, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.scenes == b.scenes
    assert not np.array_equal(a.images, c.images)


def test_captions_name_every_factor_and_effect():
    batch = generate(200, seed=3)
    from t2c_monitor.world.captions import (
        BACKGROUND_PHRASES,
        COLOR_WORDS,
        EFFECT_PHRASES,
        SHAPE_WORDS,
        SIZE_WORDS,
    )

    for scene, text in zip(batch.scenes, batch.captions, strict=True):
        assert any(w in text for w in SHAPE_WORDS[scene.shape])
        assert any(w in text for w in COLOR_WORDS[scene.color])
        assert any(w in text for w in SIZE_WORDS[scene.size])
        assert any(p in text for p in BACKGROUND_PHRASES[scene.background])
        for effect in EFFECTS:
            assert any(p in text for p in EFFECT_PHRASES[effect]) == getattr(scene, effect), (text, scene)
    assert len(set(batch.captions)) > 150  # wording and order vary


def test_focus_captions_say_only_what_is_true_and_match_their_images():
    from t2c_monitor.world.captions import COLOR_WORDS, SHAPE_WORDS, focus_caption
    from t2c_monitor.world.clip_train import matches
    from t2c_monitor.world.factors import UNSAID

    batch = generate(300, seed=5)
    rng = np.random.default_rng(0)
    texts, said = zip(*(focus_caption(scene, rng) for scene in batch.scenes), strict=True)
    truth = np.array([scene.codes() for scene in batch.scenes])
    said = np.array(said)
    assert np.all((said == UNSAID) | (said == truth)) and np.all(said[:, 0] == truth[:, 0])
    for scene, text, codes in zip(batch.scenes, texts, said, strict=True):
        assert any(w in text for w in SHAPE_WORDS[scene.shape])
        assert (codes[1] != UNSAID) == any(w in text for w in COLOR_WORDS[scene.color]), text
    assert np.mean(said[:, 1:4] == UNSAID) > 0.5  # mostly short: the shape and little else
    match = matches(torch.from_numpy(said), torch.from_numpy(truth)).numpy()
    assert np.all(np.diag(match) == 1)  # each describes its own image ...
    same_shape = truth[:, None, 0] == truth[None, :, 0]
    assert np.all(match[~same_shape] == 0) and match[same_shape].mean() > 0.1  # ... and others it fits


def _share(scenes, attribute, value=True):
    return np.mean([getattr(s, attribute) == value for s in scenes])


def _close(observed: float, p: float, n: int) -> bool:
    return abs(observed - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9


N_SCENES = 6000


def test_effect_spec_sets_exactly_that_effect_probability():
    scenes = sample_scenes(N_SCENES, np.random.default_rng(1), parse_shift("night=0.5"))
    assert _close(_share(scenes, "night"), 0.5, N_SCENES)
    for other in ("snow", "blur", "fog"):
        assert _close(_share(scenes, other), 0.2, N_SCENES)
    assert _close(_share(scenes, "color", "purple"), 1 / 8, N_SCENES)


def test_value_spec_forces_that_share_and_spreads_the_rest():
    scenes = sample_scenes(N_SCENES, np.random.default_rng(2), parse_shift(["color=purple:0.4", "background=grass:0"]))
    assert _close(_share(scenes, "color", "purple"), 0.4, N_SCENES)
    for other in FACTORS["color"]:
        if other != "purple":
            assert _close(_share(scenes, "color", other), 0.6 / 7, N_SCENES)
    assert _share(scenes, "background", "grass") == 0
    assert _close(_share(scenes, "background", "sand"), 0.25, N_SCENES)
    assert _close(_share(scenes, "shape", "star"), 0.2, N_SCENES)  # untouched factor stays uniform
    assert _close(_share(scenes, "night"), 0.2, N_SCENES)


def test_several_specs_combine():
    shift = parse_shift(["night=1", "color=purple:0.5", "color=red:0.5", "size=small:1"])
    batch = generate(40, seed=4, shift=shift)
    assert all(s.night and s.size == "small" and s.color in ("purple", "red") for s in batch.scenes)
    assert sorted(parse_shift(shift.to_specs()).to_specs()) == sorted(shift.to_specs())


@pytest.mark.parametrize("spec", [
    "colour=pink:2", "color=pink:0.3", "color=purple:1.5", "color=purple:-0.1", "color=purple", "night=2",
    "night=purple:0.3", "night", "=0.3", "fog=nan", "size=small:abc",
])
def test_bad_specs_are_refused_listing_valid_factors_and_values(spec):
    with pytest.raises(ConfigError) as info:
        parse_shift(spec)
    message = str(info.value)
    assert spec in message
    assert "color=red|green|blue|yellow|purple|orange|white|black" in message
    assert "background=gray|sand|sky|grass|brick" in message and "night=PROBABILITY" in message


def test_shares_of_one_factor_may_not_exceed_one():
    with pytest.raises(ConfigError, match="sum to more than 1"):
        parse_shift(["color=purple:0.7", "color=red:0.5"])
    with pytest.raises(ConfigError, match="set twice"):
        parse_shift(["night=0.1", "night=0.2"])


def test_cli_images_writes_files_and_manifest(tmp_path):
    from t2c_monitor.cli import app

    out = tmp_path / "imgs"
    result = CliRunner().invoke(app, ["world", "images", str(out), "--n", "5", "--seed", "1", "--shift", "night=1",
                                      "--shift", "color=black:1", "--format", "jpeg", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    keys = {"file", "shape", "color", "size", "background", "snow", "night", "blur", "fog", "caption"}
    for row in rows:
        assert set(row) == keys and row["night"] is True and row["color"] == "black"
        with Image.open(out / row["file"]) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
    again = tmp_path / "again"
    CliRunner().invoke(app, ["world", "images", str(again), "--n", "5", "--seed", "1", "--shift", "night=1",
                             "--shift", "color=black:1", "--format", "jpeg"])
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()


def test_cli_refuses_a_bad_spec_with_the_fix(tmp_path):
    from t2c_monitor.cli import app

    result = CliRunner().invoke(app, ["world", "images", str(tmp_path), "--n", "3", "--shift", "colour=pink:2"])
    assert result.exit_code == 2
    assert "colour" in result.output and "color=red|green" in result.output
    assert not (tmp_path / "manifest.jsonl").exists()


def test_default_bank_names_every_factor_value_and_effect():
    from t2c_monitor.concepts import load_bank_definition
    from t2c_monitor.world.evaluate import default_bank_path

    definition = load_bank_definition(default_bank_path())
    names = {c.name for c in definition.concepts}
    expected = {v for values in FACTORS.values() for v in values} | set(EFFECTS)
    assert names == expected
    assert all(len(c.phrasings) >= 3 for c in definition.concepts)


# ---------------------------------------------------------------------------------------------
# build cache


def test_world_key_changes_with_seed_quick_and_code_version(monkeypatch):
    from t2c_monitor.world import build

    keys = {build.world_key(0, False), build.world_key(1, False), build.world_key(0, True)}
    assert len(keys) == 3
    before = build.world_key(0, True)
    monkeypatch.setattr(build, "WORLD_CODE_VERSION", build.WORLD_CODE_VERSION + "-next")
    assert build.world_key(0, True) != before


def test_interrupted_build_leaves_no_cache_dir(tmp_path, monkeypatch):
    from t2c_monitor.world import build

    def half_then_interrupt(out, *args):
        out.mkdir(parents=True)
        (out / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_train_into", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        build.build_world(seed=3, quick=True, models_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(NotFittedError, match="t2c world build --seed 3 --quick"):
        build.load_world(seed=3, quick=True, models_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# the quick world's models (built once per session)


def test_quick_world_is_cached_and_reused(quick_world):
    from t2c_monitor.world.build import build_world

    stamp = (quick_world.root / "world.json").stat().st_mtime_ns
    again = build_world(seed=0, quick=True, models_dir=quick_world.root.parent, progress=False)
    assert again.root == quick_world.root and (again.root / "world.json").stat().st_mtime_ns == stamp
    assert quick_world.root.name.startswith("world-")
    assert not [p for p in quick_world.root.parent.iterdir() if ".building-" in p.name]


def test_quick_world_clip_loads_through_open_clip_with_identical_outputs(quick_world):
    import open_clip

    from t2c_monitor.encoders import state_dict_sha256
    from t2c_monitor.world.clip_train import load_clip, pixels_from_uint8

    clip = quick_world.clip_model(device="cpu")
    direct = load_clip(quick_world.clip_config, quick_world.clip_weights)
    batch = generate(6, seed=11)
    with torch.no_grad():
        ours = clip.encode_images(batch.pil_images())
        theirs = direct.encode_image(pixels_from_uint8(batch.images))
        text_ours = clip.encode_text(batch.captions)
        tokenizer = open_clip.get_tokenizer(quick_world.clip_config.stem)
        text_theirs = direct.encode_text(tokenizer(batch.captions))
    assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(text_ours, text_theirs, atol=1e-5)
    assert clip.identity.weights_sha256 == state_dict_sha256(direct)
    assert clip.dim == json.loads(quick_world.clip_config.read_text())["embed_dim"]


def test_quick_world_source_encoder_loads_through_timm_and_knows_shapes(quick_world):
    from t2c_monitor.world.source_model import load_source, pixels_from_uint8

    encoder = quick_world.source_encoder(device="cpu")
    classifier = load_source(quick_world.source_weights)  # timm.create_model(..., pretrained_cfg_overlay=file)
    batch = generate(8, seed=12)
    with torch.no_grad():
        features = encoder.encode_images(batch.pil_images())
        expected = classifier.forward_head(classifier.forward_features(pixels_from_uint8(batch.images)),
                                           pre_logits=True)
    assert torch.allclose(features, expected, atol=1e-5)
    config = json.loads(quick_world.source_config.read_text())
    assert config["labels"] == list(FACTORS["shape"]) and config["num_classes"] == 5
    assert encoder.dim == classifier.num_features


def test_quick_world_caption_lm_loads_through_auto_classes(quick_world):
    from transformers import GPT2LMHeadModel

    model, tokenizer = quick_world.caption_lm()
    assert isinstance(model, GPT2LMHeadModel)
    caption = "a small red star on grass, at night"
    ids = tokenizer(caption, return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == caption
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] == tokenizer.eos_token_id
    with torch.no_grad():
        again = GPT2LMHeadModel.from_pretrained(quick_world.caption_lm_dir).eval()
        assert torch.equal(model(ids).logits, again(ids).logits)
        sampled = model.generate(ids[:, :1], max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(sampled[0], skip_special_tokens=True).strip()
    prefix = json.loads((quick_world.caption_lm_dir / "prefix.json").read_text())
    assert prefix["n_embd"] == model.config.n_embd


def test_quick_world_aligned_source_encoder_beats_chance_on_colour(quick_world):
    from t2c_monitor.world.evaluate import evaluate_world

    # 600 pairs for a 512-d source: a light ridge keeps the exact fit from overfitting
    result = evaluate_world(quick_world, n_fit=600, n_test=400, ridge=0.1, device="cpu")
    colour = result["zero_shot"]["color"]
    # chance is 1/8; with 400 test images its standard error is 0.017, so +0.08 is far beyond luck
    assert colour["aligned"] > colour["chance"] + 0.08, result
    assert result["r2"] > 0.4
    assert result["zero_shot"]["background"]["aligned"] > 0.4
