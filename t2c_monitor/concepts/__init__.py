"""Concept banks: named, versioned sets of text concepts turned into unit vectors in one CLIP space.

A bank goes from a file to vectors in three steps, one module each:

``definition``  what a bank file says (``BankDefinition``): plain text or YAML, the file format
                documented there; ``schema`` holds the strict pydantic schema of the YAML
``encode``      a definition encoded with a CLIP model's text tower (``encode_bank``): each concept
                the normalised mean of its prompts' normalised embeddings
``bank``        the encoded bank (``ConceptBank``): vectors plus the CLIP identity that made them,
                saved and loaded as an artifact; ``check_same_space`` refuses vectors of another
                CLIP space

Everything callers use is importable from here (``from t2c_monitor.concepts import encode_bank``).
"""

from t2c_monitor.concepts.bank import (
    BANK_FORMAT,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    REENCODE_HINT,
    REQUIRED_METADATA,
    VECTORS_FILE,
    ConceptBank,
    check_same_space,
)
from t2c_monitor.concepts.definition import (
    BankDefinition,
    Concept,
    load_bank_definition,
    parse_bank_text,
    parse_bank_yaml,
    read_class_names,
)
from t2c_monitor.concepts.encode import (
    ConceptTruncatedWarning,
    encode_bank,
    encode_bank_file,
    encode_texts_as_concepts,
)
from t2c_monitor.concepts.schema import BankFile, ConceptEntry

__all__ = [
    "BANK_FORMAT",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "REENCODE_HINT",
    "REQUIRED_METADATA",
    "VECTORS_FILE",
    "BankDefinition",
    "BankFile",
    "Concept",
    "ConceptBank",
    "ConceptEntry",
    "ConceptTruncatedWarning",
    "check_same_space",
    "encode_bank",
    "encode_bank_file",
    "encode_texts_as_concepts",
    "load_bank_definition",
    "parse_bank_text",
    "parse_bank_yaml",
    "read_class_names",
]
