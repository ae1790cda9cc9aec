"""`t2c aligner fit` / `t2c aligner eval` end to end, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from t2c_monitor.aligner import Aligner, evaluate, save_feature_file
from t2c_monitor.cli import aligner as aligner_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SOURCE = {"kind": "timm", "name": "resnet10t", "weights": None, "weights_sha256": "a" * 64, "dim": 12}
CLIP = {"kind": "open_clip", "name": "tiny.json", "weights": None, "weights_sha256": "b" * 64, "dim": 5}


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    aligner_cli.register(app)
    return app


def write_pairs(path, n: int = 400, seed: int = 0, **identities) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 12, generator=g) @ torch.randn(12, 12, generator=g) + 1.0
    Y = X @ torch.randn(12, 5, generator=g) + 0.5 + 0.1 * torch.randn(n, 5, generator=g)
    class_vectors = torch.randn(3, 5, generator=g)
    labels = (torch.nn.functional.normalize(Y, dim=1) @ torch.nn.functional.normalize(class_vectors, dim=1).T).argmax(1)
    save_feature_file(path, X, Y, labels=labels, class_vectors=class_vectors, **identities)
    return X, Y


def run_json(cli: typer.Typer, args: list[str]) -> dict:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fit_then_eval_from_a_feature_file(cli, tmp_path):
    features = tmp_path / "pairs.safetensors"
    X, Y = write_pairs(features, source=SOURCE, clip=CLIP)
    out = tmp_path / "aligner"
    args = ["aligner", "fit", "--features", str(features), "--holdout", "0.2", "--out", str(out), "--json"]
    fitted = run_json(cli, args)
    assert (fitted["method"], fitted["d_in"], fitted["d_out"]) == ("exact", 12, 5)
    assert (fitted["n_train"], fitted["n_holdout"]) == (320, 80)
    assert fitted["metrics"]["split"] == "holdout"
    assert fitted["metrics"]["r2"] > 0.95
    assert fitted["metrics"]["retained_accuracy"] is not None
    assert fitted["source"] == SOURCE and fitted["clip"] == CLIP

    aligner = Aligner.load(out, expect_source=SOURCE, expect_clip=CLIP)
    evaluated = run_json(cli, ["aligner", "eval", str(out), "--features", str(features), "--json"])
    expected = evaluate(aligner, X, Y)
    assert abs(evaluated["metrics"]["r2"] - expected.r2) < 1e-9
    assert abs(evaluated["metrics"]["cosine"] - expected.cosine) < 1e-6
    assert 0.0 <= evaluated["metrics"]["aligned_accuracy"] <= 1.0
    assert evaluated["metrics"]["clip_accuracy"] == 1.0  # labels were made from Y itself


def test_fit_with_the_sgd_recipe_from_npz(cli, tmp_path):
    features = tmp_path / "pairs.npz"
    write_pairs(features, n=300)
    out = tmp_path / "sgd"
    args = ["aligner", "fit", "--features", str(features), "--method", "sgd", "--out", str(out), "--json"]
    fitted = run_json(cli, args)
    assert fitted["method"] == "sgd" and fitted["n_holdout"] == 30
    assert fitted["fit_info"]["epochs"] == 6 and fitted["fit_info"]["batch_size"] == 100
    assert fitted["metrics"]["r2"] > 0.5  # 18 SGD steps on 270 pairs: the recipe, not converged
    assert Aligner.load(out).method == "sgd"


def test_eval_refuses_features_of_another_encoder(cli, tmp_path):
    features = tmp_path / "pairs.safetensors"
    write_pairs(features, source=SOURCE, clip=CLIP)
    out = tmp_path / "aligner"
    run_json(cli, ["aligner", "fit", "--features", str(features), "--out", str(out), "--json"])
    other = tmp_path / "other.safetensors"
    write_pairs(other, source={**SOURCE, "weights_sha256": "d" * 64}, clip=CLIP)
    result = CliRunner().invoke(cli, ["aligner", "eval", str(out), "--features", str(other), "--json"])
    assert result.exit_code == 2
    assert "t2c aligner fit" in result.output and "dddddddddddd" in result.output
    assert result.stdout.strip() == ""


def test_bad_arguments_are_named(cli, tmp_path):
    result = CliRunner().invoke(cli, ["aligner", "fit", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--features" in result.output
    features = tmp_path / "pairs.npz"
    write_pairs(features, n=50)
    result = CliRunner().invoke(cli, ["aligner", "fit", "--features", str(features), "--method", "lbfgs", "--out", "x"])
    assert result.exit_code == 2 and "--method" in result.output
    for ridge in ("often", "-1", "nan"):
        args = ["aligner", "fit", "--features", str(features), "--ridge", ridge, "--out", "x"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "--ridge" in result.output and "auto" in result.output, result.output


def tiny_clip_config(tmp_path):
    config = tmp_path / "tiny-clip.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
            }
        )
    )
    return config


def test_eval_streams_a_feature_file_in_chunks(cli, tmp_path):
    features = tmp_path / "pairs.safetensors"
    X, Y = write_pairs(features, n=300, source=SOURCE, clip=CLIP)
    out = tmp_path / "aligner"
    run_json(cli, ["aligner", "fit", "--features", str(features), "--out", str(out), "--json"])
    whole = run_json(cli, ["aligner", "eval", str(out), "--features", str(features), "--json"])
    chunked = run_json(cli, ["aligner", "eval", str(out), "--features", str(features), "--chunk-rows", "7", "--json"])
    for key in ("r2", "cosine", "aligned_accuracy", "clip_accuracy"):
        assert chunked["metrics"][key] == pytest.approx(whole["metrics"][key], abs=1e-9)
    assert chunked["metrics"]["n"] == 300 and chunked["warnings"] == []


def test_a_feature_file_without_identities_is_warned_about(cli, tmp_path):
    features = tmp_path / "pairs.npz"
    write_pairs(features, n=120)
    fitted = run_json(cli, ["aligner", "fit", "--features", str(features), "--out", str(tmp_path / "a"), "--json"])
    assert len(fitted["warnings"]) == 1
    assert "records no source encoder or CLIP model identity" in fitted["warnings"][0]
    assert "--save-features" in fitted["warnings"][0]
    result = CliRunner().invoke(cli, ["aligner", "fit", "--features", str(features), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0 and "warning:" in result.output
    assert "in-sample R²" in result.output and "held-out metrics" in result.output


def test_class_folders_give_zero_shot_accuracy_and_bad_images_are_skipped(cli, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    images = tmp_path / "images"
    colours = {"red_square": (220, 30, 30), "blue_square": (30, 30, 220)}
    for name, rgb in colours.items():
        (images / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 40), tuple(max(0, c - 8 * i) for c in rgb)).save(images / name / f"{i}.png")
    (images / "red_square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (images / "blue_square" / "notes.webp").write_bytes(b"")  # an empty file with an image suffix
    pairs = tmp_path / "pairs.safetensors"
    clip = f"open_clip:{tiny_clip_config(tmp_path)}"
    model_args = ["--images", str(images), "--encoder", "timm:resnet10t", "--clip", clip]
    out = tmp_path / "aligner"
    fitted = run_json(
        cli,
        ["aligner", "fit", *model_args, "--ridge", "1e-2", "--holdout", "0.3", "--save-features", str(pairs),
         "--template", "a photo of a {}.", "--out", str(out), "--json"],
    )
    assert sorted(f["path"].rsplit("/", 1)[-1] for f in fitted["failed"]) == ["broken.png", "notes.webp"]
    assert all(f["reason"] for f in fitted["failed"])
    assert fitted["n_train"] + fitted["n_holdout"] == 20  # the 20 good images, nothing lost
    for key in ("aligned_accuracy", "clip_accuracy"):
        assert 0.0 <= fitted["metrics"][key] <= 1.0
    from t2c_monitor.aligner import open_feature_file

    stored = open_feature_file(pairs)
    labels = stored.get("labels")
    assert sorted(labels.tolist()) == [0] * 10 + [1] * 10  # classes sorted by name: blue_square, red_square
    assert tuple(stored.get("class_vectors").shape) == (2, 16)
    evaluated = run_json(cli, ["aligner", "eval", str(out), "--features", str(pairs), "--json"])
    assert evaluated["metrics"]["n"] == 20 and evaluated["metrics"]["clip_accuracy"] is not None


def test_a_folder_that_is_not_a_class_layout_says_why_no_accuracy_is_reported(cli, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    images = tmp_path / "images"
    for name in ("cats", "dogs"):
        (images / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(images / name / f"{i}.png")
    Image.new("RGB", (32, 32), (0, 0, 0)).save(images / "loose.png")  # not in a class folder
    clip = f"open_clip:{tiny_clip_config(tmp_path)}"
    args = ["--images", str(images), "--encoder", "timm:resnet10t", "--clip", clip, "--template", "a {}"]
    fitted = run_json(
        cli, ["aligner", "fit", *args, "--ridge", "1e-2", "--holdout", "0", "--out", str(tmp_path / "a"), "--json"]
    )
    assert fitted["n_train"] == 7 and fitted["metrics"]["aligned_accuracy"] is None  # every image used, no labels
    assert any("2 class subfolders but 1 image outside them" in w and "loose.png" in w for w in fitted["warnings"])
    assert any("--template" in w for w in fitted["warnings"])


def test_fit_and_eval_from_an_image_folder(cli, tmp_path, monkeypatch):
    """Images embedded by a tiny random timm encoder and a tiny random open_clip model, no network."""
    pytest.importorskip("t2c_monitor.encoders")
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    images = tmp_path / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(24):
        pixels = (torch.rand(48, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
    config = tiny_clip_config(tmp_path)
    out = tmp_path / "aligner"
    pairs = tmp_path / "pairs.safetensors"
    model_args = ["--images", str(images), "--encoder", "timm:resnet10t", "--clip", f"open_clip:{config}"]
    fitted = run_json(
        cli,
        ["aligner", "fit", *model_args, "--ridge", "1e-3", "--holdout", "0.25", "--save-features", str(pairs),
         "--out", str(out), "--json"],
    )
    assert fitted["d_out"] == 16 and fitted["n_train"] == 18 and fitted["n_holdout"] == 6
    assert fitted["source"]["kind"] == "timm" and fitted["clip"]["kind"] == "open_clip"
    assert fitted["d_in"] == fitted["source"]["dim"]
    assert pairs.is_file()
    evaluated = run_json(cli, ["aligner", "eval", str(out), *model_args, "--json"])
    assert evaluated["metrics"]["n"] == 24
