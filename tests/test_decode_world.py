"""Concept-to-text on the quick shapes world, measured against its ground truth
(t2c_monitor/world/decode_check.py; the full world's figures are bench/decode.py's).

The quick world trains its models for a minute and a half, so its CLIP names colours and shapes
poorly; what it must show is that decoding an *aligned source embedding* says about as much as
decoding CLIP's own image embedding, that its strong factors come through, and that the vocab
decoder's mixtures and class vectors work."""

from __future__ import annotations

import pytest

from t2c_monitor.world.decode_check import decode_semantics
from t2c_monitor.world.drift_check import fit_world_aligner


@pytest.fixture(scope="module")
def semantics(quick_world, tmp_path_factory):
    aligner = fit_world_aligner(quick_world, tmp_path_factory.mktemp("aligner"), n_fit=1500)
    return decode_semantics(quick_world, aligner, n_images=240, decoders=("vocab", "prefix"))


def test_prefix_sentences_of_aligned_embeddings_name_factors_about_as_often_as_clips(semantics):
    prefix = semantics["decoders"]["prefix"]
    for factor in ("color", "size", "background"):
        assert prefix["aligned"][factor] >= 0.85 * prefix["clip"][factor], (factor, prefix)
    assert prefix["clip"]["background"] >= 0.5, prefix  # chance is 0.2


def test_vocab_names_both_concepts_of_a_mixture_and_the_class_vectors(semantics):
    vocab = semantics["decoders"]["vocab"]
    mixtures = vocab["mixtures"]
    assert mixtures["named_by_both"] >= 0.75 * mixtures["pairs"], mixtures
    assert vocab["class_vector_hits"] >= 3, vocab["class_texts"]
    assert vocab["aligned"]["background"] >= 0.85 * vocab["clip"]["background"], vocab


def test_the_world_build_trained_a_prefix_decoder_for_its_clip(quick_world):
    from t2c_monitor.decode.prefix import PrefixDecoder

    decoder = PrefixDecoder.load(quick_world.prefix_decoder_dir)
    assert decoder.clip == quick_world.clip_model().identity
    assert decoder.recipe["corpus_size"] == len(quick_world.corpus.read_text().splitlines())
