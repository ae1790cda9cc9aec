"""Hypothesis strategies: hostile values of every argument kind and of every file format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from .corpus import ALL_STRINGS, STRINGS, deep_nesting, encodings_of
from .tiny_monitor import TINY_BANK
from .world import FuzzWorld

IN_PROCESS_STRINGS = [s for s in ALL_STRINGS if not s.startswith(("/dev/", "/proc/"))]  # devices: a subprocess
CORPUS = st.sampled_from(IN_PROCESS_STRINGS)


def hostile_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Corpus strings, random text, the two joined, and long runs (a name past every length bound)."""
    long = st.sampled_from(["x", "[/]", "é", "<", "\u202e", "\x1b"]).flatmap(
        lambda s: st.sampled_from([s * 64, s * 501, s * 5000]))
    return st.one_of(CORPUS, st.text(max_size=max_size), st.tuples(CORPUS, st.text(max_size=6), CORPUS).map("".join),
                     long)


def known_or_hostile(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), hostile_text()) if known else hostile_text()


NUMBERS = st.one_of(st.sampled_from(STRINGS["numbers"]), st.integers(-(2**70), 2**70).map(str),
                    st.floats().map(repr), hostile_text(8))
DURATIONS = st.one_of(st.sampled_from(STRINGS["durations"]), hostile_text(8))
CRONS = st.one_of(st.sampled_from(STRINGS["crons"]), hostile_text(12))
TIMES = st.one_of(st.sampled_from(["2026-01-01", "2026-01-01T00:00:00+25:00", "9999-12-31T23:59:59", "0001-01-01",
                                   "2026-13-01", "now", "1e9", "-1"]), hostile_text(8))
YAML_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text(), DURATIONS),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(hostile_text(8), inner, max_size=3)), max_leaves=6)


@dataclass(frozen=True)
class FileArg:
    """A file a command reads, written just before it runs: ``data`` under a name ending ``suffix``."""

    suffix: str
    data: bytes

    def __repr__(self) -> str:
        return f"FileArg({self.suffix!r}, {self.data[:80]!r}{'...' if len(self.data) > 80 else ''}, {len(self.data)} B)"


def materialise(argv: list[str | FileArg], folder: Path) -> list[str]:
    """``argv`` with each ``FileArg`` written under ``folder`` and replaced by its path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, arg in enumerate(argv):
        if isinstance(arg, FileArg):
            path = folder / f"input-{i}{arg.suffix}"
            path.write_bytes(arg.data)
            arg = str(path)
        out.append(arg.replace("\x00", ""))  # a real command line cannot hold a NUL byte
    return out


def alias_bomb(levels: int, fan: int, leaf: str = "lol") -> str:
    """YAML whose last anchor expands to ``fan ** levels`` strings."""
    lines = [f"l0: &l0 [{', '.join([json.dumps(leaf)] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _yaml(document: Any) -> bytes:
    import yaml

    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode()


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(document)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
    node[path[-1]] = value
    return out


def careless_variants(valid: bytes, suffix: str) -> st.SearchStrategy[FileArg]:
    """A valid file saved every careless or hostile way: other encodings, binary, an alias bomb of up to
    9**6 nodes, and nesting up to 20,000 deep (deeper and larger ones run as real processes)."""
    encoded = st.sampled_from(sorted(encodings_of(valid.decode()).items())).map(lambda kv: FileArg(suffix, kv[1]))
    bombs = st.tuples(st.integers(2, 6), st.integers(2, 9)).map(
        lambda lf: FileArg(suffix, (alias_bomb(*lf) + valid.decode().replace("description: ''", "description: *l"
                                                                              + str(lf[0] - 1))).encode()))
    nested = st.sampled_from([50, 500, 5000, 20_000]).map(lambda n: FileArg(suffix, deep_nesting(n).encode()))
    raw = st.one_of(st.binary(max_size=200), hostile_text(200).map(lambda t: t.encode("utf-8", "surrogatepass")))
    return st.one_of(encoded, bombs, nested, raw.map(lambda b: FileArg(suffix, b)))


MONITOR_KEYS = [("name",), ("description",), ("encoder",), ("clip",), ("aligner",), ("bank",), ("cbm",), ("colour",),
                ("ingest", "batch_size"), ("ingest", "decode_timeout_s"), ("ingest", "allowed_roots"),
                ("ingest", "workers"), ("audit", "alpha"), ("audit", "window"), ("audit", "correction"),
                ("alerts", "channels"), ("alerts", "quiet_period"), ("alerts", "report_url"),
                ("schedules", "audit_cron"), ("schedules", "timezone"), ("retention", "vectors"),
                ("retention", "cron"), ("decode", "guided"), ("decode", "words"), ("decode", "lm"), ("ingest", "x")]


def monitor_files(world: FuzzWorld) -> st.SearchStrategy[FileArg]:
    """Monitor files: the fuzz world's ``fuzzed`` monitor with one key set to a hostile value (a cron, a
    duration, an inbox interval), hostile channels, or the whole file saved carelessly."""
    base = world.fuzz_document()
    one_key = st.tuples(st.sampled_from(MONITOR_KEYS), YAML_VALUES).map(
        lambda kv: _set(base, ("monitors", 0, *kv[0]), kv[1]))  # type: ignore[arg-type]
    schedule = st.tuples(CRONS, DURATIONS, known_or_hostile([str(world.root / "images" / "ref-1")])).map(
        lambda cdi: _set(base, ("monitors", 0, "schedules"), {"audit_cron": cdi[0], "ingest_interval": cdi[1],
                                                               "inbox": cdi[2]}))
    channels = st.tuples(hostile_text(), st.sampled_from(["webhook", "file", "email", "prefect_block", "x"]),
                         YAML_VALUES).map(lambda t: {**base, "channels": {t[0]: {"type": t[1], "url": t[2],
                                                                                    "path": t[2]}}})
    documents = st.one_of(one_key, one_key, schedule, channels).map(lambda d: FileArg(".yaml", _yaml(d)))
    return st.one_of(documents, documents, careless_variants(_yaml(base), ".yaml"))


def bank_files() -> st.SearchStrategy[FileArg]:
    """Concept banks: YAML with hostile names, versions, templates, classes and phrasings, plain text lines,
    and careless saves."""
    concept = st.one_of(hostile_text(), st.builds(lambda n, p: {"name": n, "phrasings": p}, hostile_text(),
                                                   st.lists(hostile_text(), max_size=3)), YAML_VALUES)
    document = st.fixed_dictionaries({"name": known_or_hostile(["fuzzbank"]),
                                      "concepts": st.lists(concept, max_size=5)},
                                     optional={"version": st.one_of(NUMBERS, YAML_VALUES), "templates": YAML_VALUES,
                                               "classes": YAML_VALUES, "x": YAML_VALUES})
    lines = st.lists(hostile_text(), max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    return st.one_of(document.map(lambda d: FileArg(".yaml", _yaml(d))), lines.map(lambda b: FileArg(".txt", b)),
                     careless_variants(TINY_BANK.encode(), ".yaml"), careless_variants(b"red\ngreen\n", ".txt"))


def manifest_files(world: FuzzWorld) -> st.SearchStrategy[FileArg]:
    """Manifests, JSONL and CSV: every column hostile (the URI too: missing files, other folders, remote
    URIs), capture times that are not times, rows that are not objects, and careless saves."""
    import csv
    import io

    images = sorted(str(p) for p in (world.root / "images" / "ref-1").glob("*.png"))[:4]
    uri = known_or_hostile(images + ["s3://t2c-fuzz-no-bucket/a.png", "memory://x/y.png", "http://127.0.0.1:9/a.png"])
    row = st.tuples(st.sampled_from(["uri", "path", "file"]), uri, st.dictionaries(
        st.sampled_from(["captured_at", "capture_time", "label", "path"]), st.one_of(TIMES, uri, YAML_VALUES),
        max_size=2), st.dictionaries(hostile_text(12), YAML_VALUES, max_size=2)).map(
        lambda t: {t[0]: t[1], **t[2], **t[3]})
    rows = st.lists(row, min_size=1, max_size=4)

    def jsonl(rs: list[dict[str, Any]]) -> FileArg:
        return FileArg(".jsonl", "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rs)
                       .encode("utf-8", "surrogatepass"))

    def as_csv(rs: list[dict[str, Any]]) -> FileArg:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=sorted({k for r in rs for k in r}))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else str(v) for k, v in r.items()} for r in rs])
        return FileArg(".csv", out.getvalue().encode("utf-8", "surrogatepass"))

    raw_lines = st.lists(st.one_of(hostile_text(), YAML_VALUES.map(json.dumps)), min_size=1, max_size=4).map(
        lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    return st.one_of(rows.map(jsonl), rows.map(as_csv), st.tuples(st.sampled_from([".jsonl", ".csv"]), raw_lines)
                     .map(lambda t: FileArg(*t)), careless_variants(b'{"uri": "a.png"}\n', ".jsonl"),
                     careless_variants(b"uri,label\na.png,cat\n", ".csv"))


def _array_file(kind: str, arrays: dict[str, Any], metadata: dict[str, str] | None) -> bytes:
    import io

    import numpy as np

    if kind == ".safetensors":
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    buffer = io.BytesIO()
    if kind == ".npy":
        np.save(buffer, next(iter(arrays.values())), allow_pickle=True)
    else:
        np.savez(buffer, **arrays)
    return buffer.getvalue()


def feature_files(d_in: int = 192, d_out: int = 32, *, key: str = "X") -> st.SearchStrategy[FileArg]:
    """Paired feature (or vector) files: wrong shapes and widths, no rows, NaN and inf, other dtypes, an
    object array (a pickle), hostile identity metadata, cut short, or not an array file at all."""
    import numpy as np

    def build(kind, n, width, fill, dtype, metadata, cut):
        data = np.full((n, width), fill, dtype=dtype) if dtype != "object" else np.array([[print]], dtype=object)
        arrays = {key: data, "Y": np.ones((max(n - (width % 2), 0), d_out), dtype="float32")}
        if key != "X":
            arrays = {key: data}
        if kind == ".safetensors" and dtype == "object":
            kind = ".npz"
        blob = _array_file(kind, arrays, metadata if kind == ".safetensors" else None)
        return FileArg(kind, blob[: len(blob) // 2] if cut else blob)

    return st.builds(build, st.sampled_from([".safetensors", ".npz", ".npy"]), st.sampled_from([0, 1, 3, 40]),
                     st.sampled_from([0, 1, d_out, d_in, d_in + 1]), st.sampled_from([0.0, 1.0, float("nan"),
                                                                                      float("inf"), 1e38]),
                     st.sampled_from(["float32", "float16", "int8", "bool", "float64", "object"]),
                     st.one_of(st.none(), st.dictionaries(st.sampled_from(["source", "clip", "t2c", "x"]),
                                                          hostile_text(), max_size=2)), st.booleans()) \
        | st.binary(max_size=300).map(lambda b: FileArg(".safetensors", b))


def text_files(suffix: str = ".txt") -> st.SearchStrategy[FileArg]:
    """Class lists and caption corpora: hostile lines, and careless saves."""
    lines = st.lists(hostile_text(), max_size=6).map(lambda ls: FileArg(suffix, "\n".join(ls).encode(
        "utf-8", "surrogatepass")))
    return st.one_of(lines, careless_variants(b"cat\ndog\n", suffix))
