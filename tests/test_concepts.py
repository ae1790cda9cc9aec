"""Contracts of concept banks: template averaging, bank files, save/load, CLIP-space checks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2c_monitor.concepts import (
    ConceptBank,
    ConceptTruncatedWarning,
    check_same_space,
    encode_bank,
    load_bank_definition,
    parse_bank_text,
    parse_bank_yaml,
)
from t2c_monitor.errors import ConfigError, ModelLoadError, SpaceMismatchError
from t2c_monitor.templates import PAPER_TEMPLATES, resolve_templates


def hand_vector(clip, texts: list[str]) -> torch.Tensor:
    """The concept vector by hand: normalise each text embedding, average, normalise."""
    with torch.no_grad():
        raw = clip.model.encode_text(clip.tokenizer(texts))
    return F.normalize(F.normalize(raw, dim=1).mean(dim=0), dim=0)


def test_templates_default_to_the_papers_seven_and_check_user_templates() -> None:
    assert resolve_templates() == PAPER_TEMPLATES and len(PAPER_TEMPLATES) == 7
    assert "itap of a {}." in PAPER_TEMPLATES
    assert len(resolve_templates("imagenet80")) == 80 and resolve_templates("plain") == ("{}",)
    assert resolve_templates(["a photo of {}.", "{} at dusk"]) == ("a photo of {}.", "{} at dusk")
    for bad in (["a photo of"], ["{} and {}"], ["a {name}"], "paperz", []):
        with pytest.raises(ConfigError):
            resolve_templates(bad)


def test_bank_vectors_are_normalised_template_averages(tiny_clip) -> None:
    definition = parse_bank_text(
        "red\n# two phrasings\nat night | in the dark\n", name="t", templates=["a photo of {}.", "{} in a video game"]
    )
    bank = encode_bank(definition, tiny_clip)
    assert bank.concept_names == ("red", "at night") and bank.vectors.shape == (2, tiny_clip.dim)
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(bank.vectors[0], hand_vector(tiny_clip, ["a photo of red.", "red in a video game"]))
    torch.testing.assert_close(
        bank.vectors[1],
        hand_vector(
            tiny_clip,
            [
                "a photo of at night.",
                "at night in a video game",
                "a photo of in the dark.",
                "in the dark in a video game",
            ],
        ),
    )
    # normalising before averaging matters: the mean of raw embeddings points elsewhere
    with torch.no_grad():
        raw = tiny_clip.model.encode_text(tiny_clip.tokenizer(["a photo of red.", "red in a video game"]))
    assert not torch.allclose(F.normalize(raw.mean(0), dim=0), bank.vectors[0], atol=1e-6)
    assert bank.clip == tiny_clip.identity


def test_class_conditioned_concepts_average_over_classes(tiny_clip) -> None:
    definition = parse_bank_yaml(
        "name: ctx\ntemplates: ['a photo of the {}.']\nclasses: [dog, red car]\nconcepts:\n  - in a tree\n",
        source="ctx.yaml",
    )
    bank = encode_bank(definition, tiny_clip)
    assert bank.classes == ("dog", "red car")
    torch.testing.assert_close(
        bank.vectors[0], hand_vector(tiny_clip, ["a photo of the dog in a tree.", "a photo of the red car in a tree."])
    )


def test_yaml_banks_name_version_and_phrasings(tmp_path: Path) -> None:
    path = tmp_path / "world.yaml"
    path.write_text(
        "name: shapes-world\nversion: 3\ntemplates: plain\nconcepts:\n"
        "  - red\n  - at night | in the dark\n  - name: snow\n    phrasings: [in the snow, covered in snow]\n"
    )
    definition = load_bank_definition(path)
    assert (definition.name, definition.version, definition.templates) == ("shapes-world", 3, ("{}",))
    assert [(c.name, c.phrasings) for c in definition.concepts] == [
        ("red", ("red",)),
        ("at night", ("at night", "in the dark")),
        ("snow", ("in the snow", "covered in snow")),
    ]
    text_file = tmp_path / "colours.txt"
    text_file.write_text("# colours\nred\n\n  blue   green  # a comment\n   # an indented comment\n")
    plain = load_bank_definition(text_file, version=2)
    assert (plain.name, plain.version, [c.name for c in plain.concepts]) == ("colours", 2, ["red", "blue green"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("red\n  | dark\n", r"banks.txt:2: empty concept text"),
        ("red\nblue\nRed  \n", r"Duplicate concept 'Red' at banks.txt:3 \(first at banks.txt:1\)"),
        ("night | at night | night\n", r"banks.txt:1: concept .* repeats a phrasing"),
        ("# only comments\n\n", r"defines no concepts"),
    ],
)
def test_bad_bank_texts_say_where_and_how_to_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_bank_text(text, name="b", source="banks.txt")


def test_bad_yaml_banks_are_refused() -> None:
    with pytest.raises(ConfigError, match="'concepts' list"):
        parse_bank_yaml("name: x\n", source="x.yaml")
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        parse_bank_yaml("concepts: [red]\ncolour: 1\n", source="x.yaml")
    with pytest.raises(ConfigError, match="version must be an integer"):
        parse_bank_yaml("version: two\nconcepts: [red]\n", source="x.yaml")
    with pytest.raises(ConfigError, match="empty concept text"):
        parse_bank_yaml("concepts: [{name: x, phrasings: ['', a]}]\n", source="x.yaml")


def test_over_long_concepts_are_truncated_with_a_warning_naming_them(tiny_clip) -> None:
    long_text = "a very long description of " + " ".join(["snowy"] * 20)
    definition = parse_bank_text(f"red\n{long_text}\n", name="b", templates="plain")
    with pytest.warns(ConceptTruncatedWarning, match=r"Concept 'a very long description.*context length 16"):
        bank = encode_bank(definition, tiny_clip)
    assert bank.k == 2 and torch.isfinite(bank.vectors).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConceptTruncatedWarning)
        encode_bank(parse_bank_text("red\n", name="b"), tiny_clip)


def test_bank_save_load_round_trip_and_corruption(tiny_clip, tmp_path: Path) -> None:
    bank = encode_bank(parse_bank_text("red\nblue | azure\n", name="colours", version=4), tiny_clip)
    bank.save(tmp_path / "bank")
    loaded = ConceptBank.load(tmp_path / "bank", expect_clip=tiny_clip.identity)
    assert (loaded.name, loaded.version, loaded.concept_names, loaded.phrasings, loaded.templates) == (
        "colours",
        4,
        ("red", "blue"),
        (("red",), ("blue", "azure")),
        PAPER_TEMPLATES,
    )
    assert torch.equal(loaded.vectors, bank.vectors) and loaded.clip == bank.clip
    assert loaded.index(" BLUE ") == 1
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert meta["clip"]["weights_sha256"] == tiny_clip.identity.weights_sha256
    (tmp_path / "bank" / "vectors.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="do not match the checksum"):
        ConceptBank.load(tmp_path / "bank")
    with pytest.raises(ModelLoadError, match="missing"):
        ConceptBank.load(tmp_path / "nowhere")


def test_vectors_of_another_clip_space_are_refused(tiny_clip, tmp_path: Path) -> None:
    bank = encode_bank(parse_bank_text("red\n", name="c"), tiny_clip)
    other = dict(bank.clip.to_dict(), weights_sha256="f" * 64, name="other-clip")
    bank.check_space(tiny_clip.identity)  # same space: fine
    with pytest.raises(SpaceMismatchError, match=r"encoded with open_clip:.*t2c_test_tiny_clip.*other-clip"):
        bank.check_space(other)
    with pytest.raises(SpaceMismatchError, match="records no CLIP model"):
        check_same_space(bank.clip, None)
    bank.save(tmp_path / "b")
    with pytest.raises(SpaceMismatchError, match="other-clip"):
        ConceptBank.load(tmp_path / "b", expect_clip=other)
