"""The ``vocab`` decoder on a real (tiny, random-weight) open_clip text tower: nearest terms, sparse
decompositions of mixtures, signed directions, the per-identity cache, and refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from t2c_monitor.decode import VocabDecoder, bpe_words, build_vocabulary
from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.identity import ModelIdentity

WORDS = (
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "circle", "square", "triangle", "cross",
    "star", "small", "large", "gray", "sand", "sky", "grass", "brick", "snow", "night", "blur", "fog", "dog", "cat",
    "car", "tree", "house", "boat", "bird", "fish", "apple", "bread", "chair",
)


@pytest.fixture(scope="module")
def vocabulary(tiny_clip):
    return build_vocabulary(tiny_clip, WORDS, include_bpe_words=False)


def test_open_clip_bpe_words_are_a_large_offline_vocabulary():
    words = bpe_words()
    assert len(words) > 30_000 and {"night", "grass", "fog", "small"} <= set(words)
    assert all(w.isalpha() and w.islower() and len(w) >= 2 for w in words[:1000])
    assert not {"in", "the", "with", "picture", "photo", "image"} & set(words), "words that name nothing in a picture"


def test_nearest_terms_put_a_terms_own_embedding_first(vocabulary, tiny_clip):
    decoded = VocabDecoder(vocabulary, top=3).decode(vocabulary.vectors, space=tiny_clip.identity)
    assert [d.words(1)[0] for d in decoded] == list(WORDS)
    assert all(len(d.texts) == 3 and d.texts[0][1] == pytest.approx(1.0, abs=1e-5) for d in decoded)


def test_a_mixture_of_two_concepts_is_named_by_both(vocabulary, tiny_clip):
    """Every pair of terms mixed on the image side (centred by the image mean) comes back as that pair."""
    mean = vocabulary.vectors.mean(dim=0)
    decoder = VocabDecoder(vocabulary, mode="sparse", max_terms=4, top=2, image_mean=mean)
    pairs = list(itertools.combinations(range(len(WORDS)), 2))
    mixtures = torch.stack([vocabulary.vectors[i] + vocabulary.vectors[j] - mean for i, j in pairs])
    decoded = decoder.decode(mixtures, space=tiny_clip.identity)
    named = sum(set(d.words(2)) == {WORDS[i], WORDS[j]} for d, (i, j) in zip(decoded, pairs, strict=True))
    assert named >= 0.95 * len(pairs), f"{named} of {len(pairs)} mixtures named by both terms"
    assert all(w > 0 for d in decoded for _, w in d.texts), "weights are non-negative"


def test_a_signed_direction_splits_into_what_grew_and_what_shrank(vocabulary, tiny_clip):
    decoder = VocabDecoder(vocabulary, mode="sparse")
    pairs = list(itertools.permutations(range(len(WORDS)), 2))
    right = 0
    for i, j in pairs:
        direction = decoder.decode_direction(vocabulary.vectors[i] - vocabulary.vectors[j], space=tiny_clip.identity)
        right += direction.grew.words(1) == [WORDS[i]] and direction.shrank.words(1) == [WORDS[j]]
    assert right >= 0.95 * len(pairs), f"{right} of {len(pairs)} directions read the right way round"
    nothing = decoder.decode_direction(torch.zeros(vocabulary.dim), space=tiny_clip.identity)
    assert nothing.grew.texts == [] and nothing.shrank.texts == []


def test_vectors_of_another_space_or_shape_are_refused(vocabulary, tiny_clip):
    other = ModelIdentity("open_clip", "other", None, "f" * 64, vocabulary.dim)
    decoder = VocabDecoder(vocabulary)
    with pytest.raises(SpaceMismatchError, match="embedded by open_clip") as info:
        decoder.decode(vocabulary.vectors[:1], space=other)
    assert "f" * 12 in str(info.value) and tiny_clip.identity.weights_sha256[:12] in str(info.value)
    with pytest.raises(SpaceMismatchError):
        decoder.decode(vocabulary.vectors[:1], space=None)
    with pytest.raises(ValueError, match=r"vectors must be \(n, 32\)"):
        decoder.decode(torch.ones(2, 5), space=tiny_clip.identity)
    with pytest.raises(ValueError, match="finite"):
        decoder.decode(torch.full((1, vocabulary.dim), float("nan")), space=tiny_clip.identity)
    with pytest.raises(ValueError, match="mode must be"):
        VocabDecoder(vocabulary, mode="dense")


def test_the_vocabulary_is_cached_per_clip_identity(tiny_clip, tiny_clip_config, tmp_path, monkeypatch):
    """A second build reads the saved vectors instead of embedding again; other weights embed anew."""
    from t2c_monitor.encoders import create_clip_model

    calls: list[int] = []
    real = type(tiny_clip).encode_text

    def counting(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(tiny_clip), "encode_text", counting)
    first = build_vocabulary(tiny_clip, WORDS[:10], include_bpe_words=False, cache_dir=tmp_path)
    again = build_vocabulary(tiny_clip, WORDS[:10], include_bpe_words=False, cache_dir=tmp_path)
    assert calls == [10] and torch.equal(first.vectors, again.vectors) and again.terms == first.terms

    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_clip.model.state_dict().items()}
    torch.save(weights, tmp_path / "other.pt")
    other_clip = create_clip_model(f"open_clip:{tiny_clip_config}@{tmp_path / 'other.pt'}", device="cpu")
    other = build_vocabulary(other_clip, WORDS[:10], include_bpe_words=False, cache_dir=tmp_path)
    assert calls == [10, 10] and not torch.allclose(other.vectors, first.vectors)
    assert len([p for p in Path(tmp_path).iterdir() if p.is_dir()]) == 2, "one cached vocabulary per identity"


def test_t2c_decode_says_what_grew_and_shrank_in_an_audit_and_names_stored_vectors(monitored, tmp_path):
    """`t2c decode --audit` on a stored audit of the tiny monitor, and `--vectors` on a vector file:
    the words come from the monitor's vocabulary (its bank here), with their weights or cosines."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from t2c_monitor.audit import build_baseline, run_audit
    from t2c_monitor.cli import app
    from t2c_monitor.store.monitors import get_monitor

    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    audit = run_audit(monitored, "tiny", batches=["dark"])
    with monitored.session() as session:
        record = get_monitor(session, "tiny")
    bank = set(record.concept_names)

    result = CliRunner().invoke(app, ["decode", "--monitor", "tiny", "--audit", str(audit.id), "--bank-only",
                                      "--json"])
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout.strip().splitlines()[-1])
    assert said["audit"] == audit.id and said["grew"] and said["shrank"]
    for text, weight in said["grew"] + said["shrank"]:
        assert text in bank and weight > 0
    assert not {t for t, _ in said["grew"]} & {t for t, _ in said["shrank"]}, "a term grew or shrank, not both"

    np.save(tmp_path / "v.npy", record.concept_vectors[:2])  # the bank's own (text-side) vectors
    result = CliRunner().invoke(app, ["decode", "--monitor", "tiny", "--vectors", str(tmp_path / "v.npy"),
                                      "--bank-only", "--top", "1", "--json"])
    assert result.exit_code == 0, result.output
    decoded = json.loads(result.stdout.strip().splitlines()[-1])["decoded"]
    assert [d["texts"][0][0] for d in decoded] == record.concept_names[:2]

    unknown = CliRunner().invoke(app, ["decode", "--monitor", "tiny", "--audit", "99999", "--bank-only"])
    assert unknown.exit_code == 2 and "has no audit 99999" in unknown.output


def test_class_head_rows_are_rescaled_as_appendix_i_says_then_aligned():
    """By hand: head rows [[1, 3], [-1, 1]] have element mean 1 and element variance
    ((0)^2 + 2^2 + (-2)^2 + 0^2) / 4 = 2; training features of variance 8 scale them by sqrt(8 / 2) = 2,
    so the rows become [[2, 6], [-2, 2]] before the affine map (W = [[1, 0], [0, 2]], b = [1, 1])
    gives [[3, 13], [-1, 5]], normalised."""
    import math
    from types import SimpleNamespace

    from t2c_monitor.aligner import Aligner
    from t2c_monitor.decode.monitor import class_head_vectors
    from t2c_monitor.encoders.base import ClassHead
    from t2c_monitor.errors import ConfigError

    aligner = Aligner(W=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), b=torch.tensor([1.0, 1.0]), feature_mean=torch.zeros(2),
                      feature_variance=8.0, n_train=10, method="exact")
    head = ClassHead(weight=torch.tensor([[1.0, 3.0], [-1.0, 1.0]]), bias=None, labels=("cat", "dog"))
    identity = ModelIdentity("timm", "toy", None, "0" * 64, 2)
    labels, vectors = class_head_vectors(SimpleNamespace(class_head=head, identity=identity), aligner)
    assert labels == ["cat", "dog"]
    expected = torch.tensor([[3.0, 13.0], [-1.0, 5.0]])
    torch.testing.assert_close(vectors, expected / expected.norm(dim=1, keepdim=True))
    assert math.isclose(float(vectors[0] @ vectors[0]), 1.0, rel_tol=1e-6)
    with pytest.raises(ConfigError, match="without a classifier head"):
        class_head_vectors(SimpleNamespace(class_head=None, identity=identity), aligner)
