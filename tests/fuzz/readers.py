"""The library's readers and parsers, called directly: thousands of files and queries a second."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from .checks import REFUSAL_MAX_BYTES, Violation, markdown_injections, secrets_in
from .corpus import SECRET_MARKER, STRINGS, credential_urls
from .runner import Hang, time_bound
from .strategies import (
    CRONS,
    DURATIONS,
    NUMBERS,
    FileArg,
    bank_files,
    feature_files,
    hostile_text,
    known_or_hostile,
    manifest_files,
    materialise,
    monitor_files,
    text_files,
)
from .tiny_monitor import HOSTILE_CONCEPTS
from .world import FuzzWorld


@dataclass(frozen=True)
class Reader:
    name: str
    values: st.SearchStrategy[Any]
    call: Callable[[Any], Any]
    refusals: tuple[type[BaseException], ...]  # what it may raise: a refusal with a message
    names_file: bool = True  # a refusal names the file it read


def reader_table(world: FuzzWorld) -> dict[str, Reader]:
    """Every file format t2c reads and every query language it parses, as the library reads them."""
    from t2c_monitor.alerts import redact
    from t2c_monitor.concepts import load_bank_definition
    from t2c_monitor.concepts.definition import read_class_names
    from t2c_monitor.durations import check_cron, parse_duration
    from t2c_monitor.errors import T2CError
    from t2c_monitor.features import open_feature_file
    from t2c_monitor.manifests import items_from_manifest
    from t2c_monitor.monitors import load_monitor_file
    from t2c_monitor.reports.render import md
    from t2c_monitor.search.query import parse_constraints, parse_where
    from t2c_monitor.store.engine import normalise_url
    from t2c_monitor.world.shifts import parse_shift

    concept = known_or_hostile(["red", "grass", *HOSTILE_CONCEPTS])
    constraint = st.one_of(st.tuples(concept, st.sampled_from(["+", "-", ""]), NUMBERS).map(
        lambda t: f"{t[0]}:{t[1]}{t[2]}"), hostile_text())
    urls = st.one_of(st.sampled_from([u for _, u, _ in credential_urls(world.database_url)]),
                     st.tuples(hostile_text(), st.sampled_from(STRINGS["paths"])).map(
                         lambda t: f"postgresql://u:{SECRET_MARKER}77x@{t[0]}/{t[1]}?password={SECRET_MARKER}77x"))
    readers = [
        Reader("monitor file", monitor_files(world), load_monitor_file, (T2CError,)),
        Reader("bank file", bank_files(), load_bank_definition, (T2CError,)),
        Reader("manifest", manifest_files(world), items_from_manifest, (T2CError,)),
        Reader("feature file", feature_files(), lambda p: open_feature_file(p).get("X"), (T2CError,)),
        Reader("class list", text_files(), read_class_names, (T2CError,)),
        Reader("search query", st.lists(constraint, max_size=4), parse_constraints, (T2CError,), names_file=False),
        Reader("search where", st.lists(hostile_text(), max_size=3), parse_where, (T2CError,), names_file=False),
        Reader("duration", DURATIONS, parse_duration, (ValueError,), names_file=False),
        Reader("cron", CRONS, check_cron, (ValueError,), names_file=False),
        Reader("world shift", st.lists(hostile_text(), max_size=3), parse_shift, (T2CError,), names_file=False),
        Reader("database url", urls, normalise_url, (T2CError,), names_file=False),
        Reader("markdown text", hostile_text(), md, (), names_file=False),
        Reader("alert error text", st.sampled_from([u for _, u, _ in credential_urls(world.database_url)]).flatmap(
            lambda u: st.sampled_from([u, f"send failed: {u}", f"could not connect ({u}): refused"])), redact, (),
            names_file=False),
    ]
    return {r.name: r for r in readers}


def check_reader(reader: Reader, value: Any, folder: Path, *, time_bound_s: float = 10.0) -> list[Violation]:
    """P1, P2 and P6 for one call of a reader: it returns, or refuses with a short message that names the
    file; what ``md`` and ``redact`` return holds no live markup and no secret."""
    path = materialise([value], folder)[0] if isinstance(value, FileArg) else value
    where = f"{reader.name}: {value!r}"[:400]
    started, found = time.perf_counter(), []
    try:
        with time_bound(time_bound_s):
            result = reader.call(path)
        text = str(result) if reader.name in ("markdown text", "alert error text") else ""
        found += [Violation("markdown", where, p) for p in markdown_injections(text)]
        found += [Violation("secret", where, f"kept {s}") for s in secrets_in(text)]
    except Hang:
        found.append(Violation("hang", where, f"still running after {time_bound_s} s"))
    except reader.refusals as exc:
        message = str(exc)
        given = 0 if isinstance(value, FileArg) else len(repr(value))  # a message may quote what it was given
        if len(message) > REFUSAL_MAX_BYTES + given:
            found.append(Violation("outcome", where, f"a refusal of {len(message)} characters"))
        first = message.splitlines()[0] if message else ""
        if reader.names_file and str(path) not in first:
            found.append(Violation("outcome", where, f"a refusal that does not name the file: {message[:200]!r}"))
        found += [Violation("secret", where, f"printed {s}") for s in secrets_in(message)]
    except RecursionError:
        found.append(Violation("outcome", where, "traceback: RecursionError"))
    except Exception as exc:  # noqa: BLE001 - any other exception is a traceback the user would see
        kind = "markup" if "MarkupError" in type(exc).__name__ else "outcome"
        found.append(Violation(kind, where, f"traceback: {type(exc).__name__}: {str(exc)[:200]}"))
    seconds = time.perf_counter() - started
    if seconds > time_bound_s:
        found.append(Violation("hang", where, f"took {seconds:.1f} s"))
    return found
