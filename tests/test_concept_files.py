"""Contracts of concept bank files and their encoding: YAML keys, comments, template lists, the
`t2c concepts encode` options, bank directories that are incomplete, and streamed encoding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from typer.testing import CliRunner

from t2c_monitor.cli import app
from t2c_monitor.concepts import (
    ConceptBank,
    encode_bank,
    encode_texts_as_concepts,
    parse_bank_text,
    parse_bank_yaml,
)
from t2c_monitor.encoders import ClipModel
from t2c_monitor.errors import ConfigError, ModelLoadError
from t2c_monitor.templates import PAPER_TEMPLATES, resolve_templates

# ----------------------------------------------------------------------------------------------
# bank files


def test_yaml_names_take_one_string_or_a_list_of_strings() -> None:
    assert parse_bank_yaml("classes: dog\nconcepts: [in a tree]\n", source="b.yaml").classes == ("dog",)
    assert parse_bank_yaml("classes: [dog, red car]\nconcepts: [x]\n", source="b.yaml").classes == ("dog", "red car")
    for bad in ("classes: 5", "classes: [dog, 1]", "classes: {dog: 1}", "classes: [[dog]]"):
        with pytest.raises(ConfigError, match=r"b\.yaml: 'classes' must be a string or a list of strings"):
            parse_bank_yaml(f"{bad}\nconcepts: [red]\n", source="b.yaml")
    with pytest.raises(ConfigError, match=r"b\.yaml: concepts\[0\]: 'phrasings' must be a string or a list"):
        parse_bank_yaml("concepts: [{name: x, phrasings: 5}]\n", source="b.yaml")
    for bad in ("templates: 5", "templates: ['{}', 7]"):
        with pytest.raises(ConfigError, match=r"b\.yaml: templates: Template"):
            parse_bank_yaml(f"{bad}\nconcepts: [red]\n", source="b.yaml")


def test_comments_start_at_a_hash_after_a_blank_but_not_inside_a_word() -> None:
    text = "# languages\nC# code  # a trailing comment\n   # indented comment\nF# | F sharp\nred\t# tab\n"
    bank = parse_bank_text(text, name="b")
    assert [(c.name, c.phrasings) for c in bank.concepts] == [
        ("C# code", ("C# code",)),
        ("F#", ("F#", "F sharp")),
        ("red", ("red",)),
    ]


def test_template_sets_expand_inside_lists_and_bad_templates_say_why() -> None:
    assert resolve_templates(["paper", "{} at dusk"]) == (*PAPER_TEMPLATES, "{} at dusk")
    both = resolve_templates(["paper", "imagenet80"])  # the paper's 7 are among the 80: each is kept once
    assert both[:7] == PAPER_TEMPLATES and len(both) == len(set(both)) == 80
    with pytest.raises(ConfigError, match=r"'a photo of' has no '\{\}' where the concept goes.*paper, imagenet80"):
        resolve_templates(["paper", "a photo of"])
    with pytest.raises(ConfigError, match=r"exactly one empty '\{\}'.*has \{\}, \{\}"):
        resolve_templates(["{} and {}"])
    with pytest.raises(ConfigError, match=r"'\{\} x' is repeated"):
        resolve_templates(["{} x", "paper", "{} x"])


def test_cli_encode_mixes_template_sets_and_conditions_on_classes(tiny_clip, tiny_clip_config, tmp_path: Path) -> None:
    bankfile, classes_file = tmp_path / "places.txt", tmp_path / "classes.txt"
    bankfile.write_text("in a tree\n")
    classes_file.write_text("# animals\ncat\n\n")
    command = ["concepts", "encode", str(bankfile), "--clip", f"open_clip:{tiny_clip_config}", "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(
        app,
        [*command, "--out", str(tmp_path / "bank"), "--template", "plain", "--template", "a photo of the {}.",
         "--classes", "dog", "--classes-file", str(classes_file), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bank = ConceptBank.load(tmp_path / "bank")
    assert bank.templates == ("{}", "a photo of the {}.") and bank.classes == ("dog", "cat")
    prompts = ["dog in a tree", "a photo of the dog in a tree.", "cat in a tree", "a photo of the cat in a tree."]
    with torch.no_grad():
        raw = tiny_clip.model.encode_text(tiny_clip.tokenizer(prompts))
    torch.testing.assert_close(bank.vectors[0], F.normalize(F.normalize(raw, dim=1).mean(0), dim=0))

    result = runner.invoke(app, [*command, "--out", str(tmp_path / "b2"), "--template", "paper", "--template", "{} x"])
    assert result.exit_code == 0, result.output
    assert ConceptBank.load(tmp_path / "b2").templates == (*PAPER_TEMPLATES, "{} x")
    result = runner.invoke(app, [*command, "--out", str(tmp_path / "b3"), "--template", "a photo"])
    assert result.exit_code == 2 and "'a photo' has no '{}'" in " ".join(result.output.split())


# ----------------------------------------------------------------------------------------------
# bank directories


def small_bank(dim: int = 4) -> ConceptBank:
    clip = {"kind": "open_clip", "name": "tiny", "weights": None, "weights_sha256": "0" * 64, "dim": dim}
    return ConceptBank(name="colours", version=1, clip=clip, templates=("{}",), concept_names=("red", "blue"),
                       phrasings=(("red",), ("blue",)), vectors=F.normalize(torch.randn(2, dim), dim=1))  # fmt: skip


def rewrite(directory: Path, *, meta: dict | None = None, tensors: dict | None = None) -> None:
    """Replace a saved bank's metadata and/or vectors, keeping the checksum valid."""
    meta = meta if meta is not None else json.loads((directory / "bank.json").read_text())
    if tensors is not None:
        save_file(tensors, str(directory / "vectors.safetensors"))
    meta["vectors_sha256"] = hashlib.sha256((directory / "vectors.safetensors").read_bytes()).hexdigest()
    (directory / "bank.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("key", ["concepts", "name", "clip"])
def test_load_refuses_metadata_missing_an_entry(key: str, tmp_path: Path) -> None:
    directory = small_bank().save(tmp_path / "bank")
    meta = json.loads((directory / "bank.json").read_text())
    del meta[key]
    rewrite(directory, meta=meta)
    with pytest.raises(ModelLoadError, match=rf"bank\.json lacks \['{key}'\]: re-encode .*t2c concepts encode"):
        ConceptBank.load(directory)


def test_load_refuses_vectors_of_the_wrong_width_or_shape(tmp_path: Path) -> None:
    directory = small_bank(dim=4).save(tmp_path / "bank")
    rewrite(directory, tensors={"vectors": torch.zeros(2, 3)})
    with pytest.raises(ModelLoadError, match=r"are 3 wide, but .*bank\.json records 4 .*t2c concepts encode"):
        ConceptBank.load(directory)
    rewrite(directory, tensors={"vectors": torch.zeros(3, 4)})
    with pytest.raises(ModelLoadError, match=r"incomplete or inconsistent \(ValueError: vectors must be \(2, d\)"):
        ConceptBank.load(directory)
    rewrite(directory, tensors={"weights": torch.zeros(2, 4)})
    with pytest.raises(ModelLoadError, match=r"lacks tensors \['vectors'\] \(it holds \['weights'\]\)"):
        ConceptBank.load(directory)
    meta = json.loads((directory / "bank.json").read_text())
    rewrite(directory, meta=meta | {"concepts": ["red", "blue"]}, tensors={"vectors": torch.zeros(2, 4)})
    with pytest.raises(ModelLoadError, match=r"incomplete or inconsistent \(TypeError"):
        ConceptBank.load(directory)


# ----------------------------------------------------------------------------------------------
# encoding


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_streamed_encoding_matches_one_pass_over_every_prompt(tiny_clip, batch_size: int) -> None:
    groups = [["red", "crimson", "scarlet", "ruby"], ["blue"], ["green", "lime"]]
    embeddings = tiny_clip.encode_text([p for g in groups for p in g])
    owners = [i for i, g in enumerate(groups) for _ in g]
    expected = torch.stack([F.normalize(F.normalize(embeddings[[j for j, o in enumerate(owners) if o == i]], dim=1)
                                        .mean(0), dim=0) for i in range(len(groups))])  # fmt: skip
    torch.testing.assert_close(encode_texts_as_concepts(tiny_clip, groups, batch_size=batch_size), expected)


class SmallTextTower(ClipModel):
    """A real CLIP model that, like an accelerator with little memory, takes at most ``limit`` texts at once."""

    def __init__(self, clip: ClipModel, limit: int):
        super().__init__(clip.model, clip.identity, clip.preprocess, clip.device, clip.tokenizer)
        self.limit = limit

    def encode_text(self, texts, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        if len(texts) > self.limit:
            raise MemoryError(f"{len(texts)} texts at once; this text tower holds {self.limit}")
        return super().encode_text(texts, batch_size=batch_size, progress=progress)


def test_class_conditioned_banks_are_encoded_in_bounded_batches(tiny_clip, capsys) -> None:
    classes = [f"class{i}" for i in range(40)]  # 40 classes x 2 templates x 4 concepts = 320 prompts
    definition = parse_bank_text("\n".join(f"concept {i}" for i in range(4)), name="b", classes=classes,
                                 templates=["a photo of the {}.", "{}"])  # fmt: skip
    bank = encode_bank(definition, SmallTextTower(tiny_clip, limit=48), batch_size=48, progress=True)
    assert "encoding concepts" in capsys.readouterr().err
    one_batch = encode_bank(definition, tiny_clip, batch_size=10_000)
    torch.testing.assert_close(bank.vectors, one_batch.vectors)
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(4))
