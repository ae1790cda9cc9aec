"""Zero-shot classification of a labelled folder of real PNG files, library and CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from t2c_monitor.aligner import Aligner, fit_exact
from t2c_monitor.cli import app
from t2c_monitor.concepts import ConceptBank, encode_texts_as_concepts
from t2c_monitor.encoders import create_clip_model, create_source_encoder
from t2c_monitor.errors import ConfigError, SpaceMismatchError
from t2c_monitor.scoring import list_labelled_images, zero_shot_accuracy, zero_shot_folder
from t2c_monitor.templates import PAPER_TEMPLATES

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "dark_blue": (20, 20, 120)}
PER_CLASS = 4


@pytest.fixture(scope="module")
def clip_config(tiny_clip_config: Path) -> Path:
    return tiny_clip_config


@pytest.fixture(scope="module")
def models(clip_config: Path):
    return (create_source_encoder("timm:test_resnet", device="cpu"),
            create_clip_model(f"open_clip:{clip_config}", device="cpu"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/<colour>/*.png: noisy squares of each colour on random backgrounds, real PNG files."""
    root = tmp_path_factory.mktemp("zeroshot")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
            x, y = rng.integers(0, 15, size=2)
            pixels[y : y + 25, x : x + 25] = np.clip(np.array(colour) + rng.normal(0, 10, 3), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "notes").mkdir()  # a folder without images is not a class
    (root / "notes" / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def aligner(models, folder: Path) -> Aligner:
    """Fitted on the folder's own images: with more feature dims than images, least squares
    reproduces CLIP's image embeddings exactly (minimum-norm interpolation)."""
    encoder, clip = models
    paths, _, _ = list_labelled_images(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular covariance: expected with 12 images
        fitted = fit_exact([(encoder.encode_images(images), clip.encode_images(images))])
    fitted.source, fitted.clip = encoder.identity, clip.identity
    return fitted


def test_folder_layout_is_read_as_sorted_classes(folder: Path) -> None:
    paths, labels, classes = list_labelled_images(folder)
    assert classes == ["dark_blue", "green", "red"]
    assert len(paths) == 3 * PER_CLASS and labels == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ConfigError, match="at least two"):
        list_labelled_images(folder / "red")


def test_zero_shot_report_matches_a_hand_computation(models, folder: Path, aligner: Aligner) -> None:
    encoder, clip = models
    report = zero_shot_folder(folder, encoder, aligner, clip)
    paths, labels, classes = list_labelled_images(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    class_vectors = encode_texts_as_concepts(
        clip, [[t.format(c.replace("_", " ")) for t in PAPER_TEMPLATES] for c in classes])
    y = torch.tensor(labels)
    expected = zero_shot_accuracy(aligner.transform(encoder.encode_images(images)), class_vectors, y)
    expected_clip = zero_shot_accuracy(clip.encode_images(images), class_vectors, y)
    assert report.n_images == 12 and report.classes == classes and report.prompts_for[0] == "dark blue"
    assert report.accuracy == pytest.approx(expected) and report.clip_accuracy == pytest.approx(expected_clip)
    assert sum(row["n"] for row in report.per_class.values()) == 12
    assert report.per_class["red"]["accuracy"] in {0.0, 0.25, 0.5, 0.75, 1.0}
    # the aligner reproduces CLIP's image embeddings here, so the encoder inherits CLIP's accuracy
    assert report.accuracy == pytest.approx(report.clip_accuracy)


def test_undecodable_images_are_listed_and_the_rest_scored(models, folder: Path, aligner: Aligner,
                                                           tmp_path: Path) -> None:
    encoder, clip = models
    broken = tmp_path / "copy"
    for path in folder.glob("*/*.png"):
        (broken / path.parent.name).mkdir(parents=True, exist_ok=True)
        (broken / path.parent.name / path.name).write_bytes(path.read_bytes())
    (broken / "red" / "corrupt.png").write_bytes(b"\x89PNG not really")
    report = zero_shot_folder(broken, encoder, aligner, clip)
    assert report.n_images == 12 and len(report.failed) == 1 and report.failed[0]["path"].endswith("corrupt.png")
    assert report.failed[0]["reason"].split(":")[0] in {"not an image", "truncated", "corrupt"}


def test_an_aligner_of_other_models_is_refused(models, folder: Path, aligner: Aligner) -> None:
    encoder, clip = models
    other = create_source_encoder("timm:resnet10t")
    with pytest.raises(SpaceMismatchError, match="fitted for source encoder .*test_resnet.* in use is .*resnet10t"):
        zero_shot_folder(folder, other, aligner, clip)
    foreign = Aligner(W=aligner.W, b=aligner.b, feature_mean=aligner.feature_mean,
                      feature_variance=aligner.feature_variance, n_train=aligner.n_train, method="exact",
                      source=aligner.source, clip=dict(aligner.clip.to_dict(), weights_sha256="0" * 64))
    refusal = "fitted for CLIP model .*sha256 000000000000.* CLIP model in use is"
    with pytest.raises(SpaceMismatchError, match=refusal) as refused:
        zero_shot_folder(folder, encoder, foreign, clip)
    assert "concept bank" not in str(refused.value)  # the aligner's space is the subject, not a bank


def test_cli_zeroshot_and_concepts_encode(models, folder: Path, aligner: Aligner, clip_config: Path,
                                          tmp_path: Path) -> None:
    encoder, clip = models
    aligner.save(tmp_path / "aligner")
    runner = CliRunner()
    result = runner.invoke(app, ["zeroshot", str(folder), "--encoder", "timm:test_resnet", "--aligner",
                                 str(tmp_path / "aligner"), "--clip", f"open_clip:{clip_config}", "--device", "cpu",
                                 "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    expected = zero_shot_folder(folder, encoder, aligner, clip)
    assert payload["accuracy"] == pytest.approx(expected.accuracy)
    assert payload["clip_accuracy"] == pytest.approx(expected.clip_accuracy) and payload["n_images"] == 12

    result = runner.invoke(app, ["zeroshot", str(folder), "--encoder", "timm:resnet10t", "--aligner",
                                 str(tmp_path / "aligner"), "--clip", f"open_clip:{clip_config}"])
    assert result.exit_code != 0 and isinstance(result.exception, SpaceMismatchError | SystemExit)

    bankfile = tmp_path / "colours.txt"
    bankfile.write_text("red\ngreen | lime\n")
    result = runner.invoke(app, ["concepts", "encode", str(bankfile), "--clip", f"open_clip:{clip_config}",
                                 "--out", str(tmp_path / "bank"), "--template", "plain", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["name"], summary["k"], summary["dim"], summary["templates"]) == ("colours", 2, 32, 1)
    bank = ConceptBank.load(tmp_path / "bank", expect_clip=clip.identity)
    torch.testing.assert_close(bank.vectors[1], encode_texts_as_concepts(clip, [["green", "lime"]])[0])
