"""Contracts of the encoder factories: widths, preprocessing, local files, hub names offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLIP
from PIL import Image

from t2c_monitor.encoders import (
    ClipSpec,
    EncoderSpec,
    ModelIdentity,
    create_clip_model,
    create_source_encoder,
)
from t2c_monitor.errors import ConfigError, ModelLoadError

TIMM_SPECS = ["timm:test_vit", "timm:test_resnet", "timm:resnet10t"]


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


def expected_pixels(colour: tuple[int, int, int], mean, std) -> torch.Tensor:
    """What a solid image must become after resizing and normalising: (c/255 - mean) / std per channel."""
    return (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(mean)) / torch.tensor(std)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Hub offline, an empty hub cache, and any socket connection attempt recorded and refused."""
    from huggingface_hub import constants

    attempts: list = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"test guard: network connection to {address!r} attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's url cache is ~/.cache/clip
    return cache


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The folder of a Hugging Face cache where ``repo_id``'s files at revision main are found."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


# ------------------------------------------------------------------------------------------ specs


def test_spec_strings_parse_into_name_and_weights() -> None:
    assert EncoderSpec.parse("timm:resnet50.a1_in1k") == EncoderSpec("resnet50.a1_in1k", None)
    assert EncoderSpec.parse("resnet10t@/w/x.safetensors") == EncoderSpec("resnet10t", "/w/x.safetensors")
    assert ClipSpec.parse("open_clip:ViT-B-32@laion2b_s34b_b79k") == ClipSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert ClipSpec.parse("open_clip:/p/cfg.json@/p/ckpt.pt") == ClipSpec("/p/cfg.json", "/p/ckpt.pt")
    assert str(ClipSpec.parse("open_clip:/p/cfg.json@/p/ckpt.pt")) == "open_clip:/p/cfg.json@/p/ckpt.pt"
    with pytest.raises(ConfigError, match="open_clip model where a timm model"):
        EncoderSpec.parse("open_clip:ViT-B-32")
    with pytest.raises(ConfigError, match="Malformed"):
        EncoderSpec.parse("timm:resnet10t@")


def test_identity_round_trips_and_compares_by_weights() -> None:
    a = ModelIdentity("timm", "resnet10t", "/a.safetensors", "ab" * 32, 512)
    assert ModelIdentity.from_dict(a.to_dict()) == a
    assert a.same_model(ModelIdentity("timm", "resnet10t", "/b.pt", "ab" * 32, 512))
    assert not a.same_model(ModelIdentity("timm", "resnet10t", "/a.safetensors", "cd" * 32, 512))


# ----------------------------------------------------------------------------- timm contracts


@pytest.fixture(scope="module", params=TIMM_SPECS)
def timm_encoder(request: pytest.FixtureRequest):
    return create_source_encoder(request.param, device="cpu")


def test_timm_output_width_equals_reported_dim(timm_encoder) -> None:
    features = timm_encoder.encode_images([solid((200, 30, 30)), solid((10, 10, 240), (70, 90))], batch_size=1)
    assert features.shape == (2, timm_encoder.dim) == (2, timm_encoder.identity.dim)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_timm_preprocessing_is_the_models_own(timm_encoder) -> None:
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_encoder.identity.name)  # the registry's, not our wrapper's
    pixels = timm_encoder.preprocess(solid((200, 30, 30)))
    assert tuple(pixels.shape) == tuple(cfg.input_size)
    expected = expected_pixels((200, 30, 30), cfg.mean, cfg.std)
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected, atol=1e-3, rtol=0)


def test_random_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_source_encoder("timm:test_resnet")
    after = torch.rand(1)
    b = create_source_encoder("test_resnet")
    assert a.identity.weights is None and a.identity == b.identity
    assert torch.equal(before, after)


def test_timm_local_files_round_trip(tmp_path: Path) -> None:
    """A classifier checkpoint (5-class head) saved as safetensors and as a torch checkpoint gives
    the same features and the same weights hash, equal to timm's own pre-logits."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    trained = timm.create_model("resnet10t", num_classes=5).eval()
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "w.pt")

    from_safetensors = create_source_encoder(f"timm:resnet10t@{tmp_path / 'w.safetensors'}", device="cpu")
    from_torch = create_source_encoder(EncoderSpec("resnet10t", str(tmp_path / "w.pt")), device="cpu")
    pixels = torch.stack([from_torch.preprocess(solid((90, 160, 20))), from_torch.preprocess(solid((5, 5, 5)))])
    with torch.no_grad():
        reference = trained.forward_head(trained.forward_features(pixels), pre_logits=True)
    torch.testing.assert_close(from_safetensors.encode(pixels), reference)
    torch.testing.assert_close(from_torch.encode(pixels), reference)
    assert from_safetensors.identity.weights_sha256 == from_torch.identity.weights_sha256
    assert from_safetensors.identity.same_model(from_torch.identity)
    assert from_safetensors.identity.weights == str((tmp_path / "w.safetensors").resolve())
    assert not from_safetensors.identity.same_model(create_source_encoder("timm:resnet10t").identity)

    # an encoder's own weights saved and reloaded keep their identity
    save_file(from_torch.model.state_dict(), str(tmp_path / "encoder.safetensors"))
    again = create_source_encoder(f"timm:resnet10t@{tmp_path / 'encoder.safetensors'}")
    assert again.identity.weights_sha256 == from_torch.identity.weights_sha256


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError, match="cannot be loaded into timm model resnet10t"):
        create_source_encoder(f"timm:resnet10t@{tmp_path / 'other.safetensors'}")
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_source_encoder(f"timm:resnet10t@{tmp_path / 'missing.safetensors'}")


def test_unknown_names_and_tags_say_how_to_fix() -> None:
    with pytest.raises(ModelLoadError, match=r"Unknown timm model \(resnet10tt\).*resnet10t.*list_models"):
        create_source_encoder("timm:resnet10tt")
    with pytest.raises(ModelLoadError, match=r"Unknown pretrained tag 'nope'.*c3_in1k"):
        create_source_encoder("timm:resnet10t.nope")
    with pytest.raises(ModelLoadError, match=r"Unknown open_clip model \(ViT-B-33\).*ViT-B-32"):
        create_clip_model("open_clip:ViT-B-33")
    with pytest.raises(ModelLoadError, match=r"Unknown pretrained tag 'nope' for open_clip model ViT-B-32.*laion2b"):
        create_clip_model("open_clip:ViT-B-32@nope")
    with pytest.raises(ModelLoadError, match="schema, which is not supported"):
        create_clip_model("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


# ------------------------------------------------------------------------ hub names, offline


def test_uncached_hub_weights_fail_offline_without_network(no_network: list, empty_hub_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"resnet10t\.c3_in1k.*not in the local cache.*must be cached.*local file"):
        create_source_encoder("timm:resnet10t.c3_in1k")
    with pytest.raises(ModelLoadError, match=r"ViT-B-32 \(laion2b_s34b_b79k\).*not in the local cache.*local file"):
        create_clip_model("open_clip:ViT-B-32@laion2b_s34b_b79k")
    assert no_network == []


def test_cached_hub_weights_load_offline_without_network(no_network: list, empty_hub_cache: Path) -> None:
    """A hub tag routes to the Hugging Face cache: weights placed there load with no connection."""
    import timm
    from safetensors.torch import save_file

    snapshot = hub_snapshot(empty_hub_cache, "timm/resnet10t.c3_in1k")
    torch.manual_seed(3)
    published = timm.create_model("resnet10t").eval()
    save_file(published.state_dict(), str(snapshot / "model.safetensors"))

    encoder = create_source_encoder("timm:resnet10t.c3_in1k", device="cpu")
    assert (encoder.identity.name, encoder.identity.weights) == ("resnet10t", "c3_in1k")
    assert tuple(encoder.preprocess(solid((1, 2, 3))).shape) == (3, 176, 176)  # the tag's own input size
    pixels = encoder.preprocess(solid((120, 60, 200))).unsqueeze(0)
    with torch.no_grad():
        reference = published.forward_head(published.forward_features(pixels), pre_logits=True)
    torch.testing.assert_close(encoder.encode(pixels), reference)
    assert no_network == []


@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_cached_clip_tag_loads_offline_without_network(
    filename: str,
    no_network: list,
    empty_hub_cache: Path,
    tiny_clip,
    tiny_clip_config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open_clip pretrained tag routes to the Hugging Face cache: a checkpoint placed there under
    either name open_clip publishes loads with no connection, and its weights are the ones saved."""
    import open_clip
    from open_clip import pretrained
    from safetensors.torch import save_file

    from t2c_monitor.encoders import hub_offline, state_dict_sha256

    # open_clip has no public call to register a tag: add one for the tiny architecture, as its
    # registry lists e.g. ViT-B-32's laion2b_s34b_b79k (hf_hub "ORG/REPO/" = the default file names)
    monkeypatch.setitem(
        pretrained._PRETRAINED, "t2c_test_tiny_clip", {"t2c_tag": pretrained._pcfg(hf_hub="t2c-test/tiny-clip/")}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)  # not the factory's random-init seed: loading must replace the weights
        published = open_clip.create_model("t2c_test_tiny_clip").eval()
    state = {k: v.contiguous() for k, v in published.state_dict().items()}
    snapshot = hub_snapshot(empty_hub_cache, "t2c-test/tiny-clip")
    if filename.endswith(".safetensors"):
        save_file(state, str(snapshot / filename))
    else:
        torch.save(state, snapshot / filename)

    assert hub_offline()
    model = create_clip_model(f"open_clip:{tiny_clip_config}@t2c_tag", device="cpu")
    assert model.identity.weights == "t2c_tag"
    assert model.identity.weights_sha256 == state_dict_sha256(published) != tiny_clip.identity.weights_sha256
    loaded = model.model.state_dict()
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert no_network == []


# ---------------------------------------------------------------------------- CLIP contracts


def test_clip_widths_equal_reported_dim(tiny_clip) -> None:
    images = tiny_clip.encode_images([solid((255, 0, 0)), solid((0, 255, 0), (20, 64)), solid((0, 0, 0))], batch_size=2)
    texts = tiny_clip.encode_text(["a red square", "a green circle"], batch_size=1)
    assert images.shape == (3, tiny_clip.dim) and texts.shape == (2, tiny_clip.dim) and tiny_clip.dim == 32
    assert tiny_clip.identity.kind == "open_clip" and tiny_clip.identity.weights is None


def test_clip_text_uses_the_models_tokenizer_and_is_not_normalised(tiny_clip) -> None:
    import open_clip

    texts = ["a red square", "a photo of the small green circle"]
    tokens = open_clip.get_tokenizer("t2c_test_tiny_clip")(texts)
    assert tokens.shape[1] == TINY_CLIP["text_cfg"]["context_length"] == tiny_clip.context_length
    with torch.no_grad():
        reference = tiny_clip.model.encode_text(tokens)
    torch.testing.assert_close(tiny_clip.encode_text(texts), reference)
    assert tiny_clip.count_tokens("a red square") == 5  # start, a, red, square, end


def test_clip_preprocessing_uses_clip_normalisation(tiny_clip) -> None:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pixels = tiny_clip.preprocess(solid((30, 200, 90), (50, 80)))
    assert tuple(pixels.shape) == (3, 32, 32)
    expected = expected_pixels((30, 200, 90), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected, atol=1e-3, rtol=0)


def test_clip_local_checkpoints_round_trip(tiny_clip, tiny_clip_config: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = tiny_clip.model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "clip.safetensors"))
    torch.save(state, tmp_path / "clip.pt")
    loaded = [
        create_clip_model(f"open_clip:{tiny_clip_config}@{tmp_path / name}") for name in ("clip.safetensors", "clip.pt")
    ]
    pixels = tiny_clip.preprocess(solid((10, 100, 250))).unsqueeze(0)
    for model in loaded:
        assert model.identity.weights_sha256 == tiny_clip.identity.weights_sha256
        assert model.identity.name == str(tiny_clip_config.resolve())
        torch.testing.assert_close(model.encode(pixels), tiny_clip.encode(pixels))
        torch.testing.assert_close(model.encode_text(["snow"]), tiny_clip.encode_text(["snow"]))


def test_clip_config_errors_say_what_is_wrong(tmp_path: Path, tiny_clip_config: Path) -> None:
    bad = tmp_path / "not_a_clip.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ModelLoadError, match="needs the keys embed_dim, vision_cfg and text_cfg"):
        create_clip_model(f"open_clip:{bad}")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "unrelated.pt")
    with pytest.raises(ModelLoadError, match="saved from this architecture"):
        create_clip_model(f"open_clip:{tiny_clip_config}@{tmp_path / 'unrelated.pt'}")
    clash = tmp_path / "ViT-B-32.json"
    clash.write_text(json.dumps(TINY_CLIP))
    with pytest.raises(ModelLoadError, match="rename"):
        create_clip_model(f"open_clip:{clash}")


def test_world_architectures_load_by_name_in_a_fresh_process() -> None:
    """A monitor file may name the shapes world's encoder; nothing else has to import it first."""
    import subprocess
    import sys

    code = (
        "from t2c_monitor.encoders import create_source_encoder; "
        "print(create_source_encoder('timm:t2c_world_resnet', device='cpu').dim)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "512"


def test_architectures_of_plugins_load_through_entry_points_without_being_named():
    """The world's timm architecture is registered by its entry point when the factory meets a
    name timm does not know; no production module imports the world for it."""
    import subprocess
    import sys

    code = ("import sys; from t2c_monitor.encoders import create_source_encoder, load_model_plugins; "
            "assert 't2c_monitor.world.source_model' not in sys.modules; "
            "e = create_source_encoder('timm:t2c_world_resnet', device='cpu'); "
            "print(e.dim, 't2c_monitor.world.source_model' in sys.modules, load_model_plugins())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dim, imported, plugins = out.stdout.split(" ", 2)
    assert int(dim) > 0 and imported == "True" and "t2c_monitor.world.source_model" in plugins
