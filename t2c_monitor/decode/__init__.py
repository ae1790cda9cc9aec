"""Concept-to-text: vectors of an aligned CLIP space decoded into words (the paper's "and back").

``base``        the decoded result, the decoder interface, the space and shape checks
``factory``     ``create_decoder(DecoderSettings(kind=...), clip=...)``: the one way to make a decoder
``vocabulary``  terms embedded once by a CLIP text tower, cached per CLIP identity
``vocab``       nearest terms, or a sparse non-negative mix of terms; signed directions split into
                what grew and what shrank
``prefix``      CapDec-style: a mapping network trained on captions alone prefixes a causal LM
``guided``      ZeroCap-style: a causal LM steered by CLIP while it writes, no training
``lm``          causal LMs by hub name or local directory, with their identities
``monitor``     the use cases of `t2c decode` in a monitor's space

Every decoder refuses vectors of another CLIP space.
"""

from t2c_monitor.decode.base import Decoded, Decoder
from t2c_monitor.decode.factory import DECODER_KINDS, DecoderSettings, create_decoder
from t2c_monitor.decode.vocab import DecodedDirection, VocabDecoder, VocabMode
from t2c_monitor.decode.vocabulary import Vocabulary, bpe_words, build_vocabulary, corpus_words, vocabulary_of

__all__ = [
    "DECODER_KINDS",
    "Decoded",
    "DecodedDirection",
    "Decoder",
    "DecoderSettings",
    "VocabDecoder",
    "VocabMode",
    "Vocabulary",
    "bpe_words",
    "build_vocabulary",
    "corpus_words",
    "create_decoder",
    "vocabulary_of",
]
