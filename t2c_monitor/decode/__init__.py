"""Concept-to-text: vectors of an aligned CLIP space decoded into words (the paper's "and back").

``vocabulary``  terms embedded once by a CLIP text tower, cached per CLIP identity
``vocab``       the ``vocab`` decoder: nearest terms, or a sparse non-negative mix of terms;
                signed directions split into what grew and what shrank

Every decoder refuses vectors of another CLIP space. (The ``guided`` and ``prefix`` sentence
decoders of issue 14 are still to come.)
"""

from t2c_monitor.decode.base import Decoded, Decoder
from t2c_monitor.decode.vocab import DecodedDirection, VocabDecoder, VocabMode
from t2c_monitor.decode.vocabulary import Vocabulary, bpe_words, build_vocabulary, corpus_words, vocabulary_of

__all__ = [
    "Decoded",
    "Decoder",
    "DecodedDirection",
    "VocabDecoder",
    "VocabMode",
    "Vocabulary",
    "bpe_words",
    "build_vocabulary",
    "corpus_words",
    "vocabulary_of",
]
