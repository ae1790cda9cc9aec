"""A maintained bank: suggest concepts for drift the bank does not name, add and remove concepts.

``suggest_concepts`` decodes the unexplained part of an audit's drift direction (stored with the
audit, see ``drift.explain_shift``) into vocabulary terms the bank does not hold yet.
``change_bank`` adds or removes concepts of a monitor whose bank is a definition file: the file is
edited (checked first, written atomically, restored if anything after fails), the monitor is
applied again (a new bank version; concepts keep their names, so `t2c audit history` stays
comparable per concept), and the active baseline is rebuilt from the stored aligned vectors of its
batches (no image is embedded again), so the next audit goes on without a manual step.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t2c_monitor.concepts.definition import load_bank_definition, normalise_key
from t2c_monitor.errors import ConfigError
from t2c_monitor.store import Database
from t2c_monitor.store.monitors import MonitorRecord, get_monitor
from t2c_monitor.textfiles import clip, load_yaml, read_text

DEFINITION_SUFFIXES = (".yaml", ".yml", ".txt")


@dataclass(frozen=True)
class Suggestion:
    """A term to add as a concept, and its weight in the unexplained drift."""

    name: str
    weight: float


@dataclass(frozen=True)
class Suggestions:
    monitor: str
    audit_id: int
    unlisted: bool  # whether the audit reported drift the bank does not explain
    residual_share: float | None
    suggestions: list[Suggestion]
    bank_file: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suggestions": [asdict(s) for s in self.suggestions]}


def suggest_concepts(db: Database, monitor: str, audit_id: int, *, top: int = 5) -> Suggestions:
    """Terms for what audit ``audit_id`` found unexplained, best first, none already in the bank."""
    from t2c_monitor.decode.drift import audit_decoders
    from t2c_monitor.store.audits import audit_explanation

    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}.")
    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        stored = audit_explanation(conn, record.id, audit_id)
    if stored.residual is None:
        raise ConfigError(f"Audit {audit_id} of {monitor} has no unexplained drift to suggest concepts for"
                          f"{' (it failed)' if stored.status == 'failed' else ''}: suggestions come from audits "
                          "that report a shift the bank does not explain (`t2c audit --monitor ...`).")
    vocab, _ = audit_decoders(record, top=4 * top)
    decoded = vocab.decode_direction(stored.residual, space=record.clip).grew
    known = {normalise_key(n) for n in record.concept_names}
    found = [Suggestion(text, round(float(weight), 4)) for text, weight in decoded.texts
             if normalise_key(text) not in known]
    return Suggestions(monitor=monitor, audit_id=audit_id, unlisted=bool(stored.explanation.get("unlisted")),
                       residual_share=stored.explanation.get("residual_share"), suggestions=found[:top],
                       bank_file=str(record.config.bank))


@dataclass(frozen=True)
class BankChange:
    """What ``change_bank`` did."""

    monitor: str
    bank_file: str
    added: list[str]
    removed: list[str]
    bank: str
    bank_version: int
    concepts: int
    baseline: dict[str, Any] | None = None  # the rebuilt baseline (``audit.BaselineSummary``), if there was one
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _concept_key(entry: Any) -> str:
    """The name of a YAML concept entry ('a | b', or {name:, phrasings:})."""
    if isinstance(entry, dict):
        name = entry.get("name") or (entry.get("phrasings") or [""])[0]
    else:
        name = str(entry).split("|")[0]
    return normalise_key(str(name))


def _edited_text(path: Path, add: list[tuple[str, ...]], remove: list[str]) -> str:
    """The bank file's new text: concepts appended (each as its phrasings, the first naming it) and
    removed by name; a YAML file keeps its leading comment lines."""
    text = read_text(path, what="concept bank file")
    drop = {normalise_key(n) for n in remove}
    if path.suffix in (".yaml", ".yml"):
        import yaml

        doc = load_yaml(text, where=str(path)) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("concepts"), list):
            raise ConfigError(f"{path} has no 'concepts' list to edit.")
        doc["concepts"] = [c for c in doc["concepts"] if _concept_key(c) not in drop]
        doc["concepts"] += [p[0] if len(p) == 1 else {"name": p[0], "phrasings": list(p)} for p in add]
        lead = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            lead.append(line)
        header = "\n".join(lead) + ("\n" if lead else "")
        return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    kept = [line for line in text.splitlines()
            if not line.strip() or line.lstrip().startswith("#")
            or normalise_key(re.split(r"\s#", line)[0].split("|")[0]) not in drop]
    return "\n".join(kept + [" | ".join(p) for p in add]) + "\n"


def change_bank(db: Database, monitor: str, *, add: list[str] | None = None, remove: list[str] | None = None,
                device: str | None = None) -> BankChange:
    """Add concepts (each ``'name | phrasing | ...'``) to and remove concepts (by name) from the
    monitor's bank file, apply the monitor again and rebuild its baseline from stored vectors."""
    from t2c_monitor.apply import apply_monitor
    from t2c_monitor.audit import build_baseline
    from t2c_monitor.store.baselines import baseline_batches

    with db.session() as session:
        record = get_monitor(session, monitor)
    path = Path(record.config.bank)
    additions = [tuple(p.strip() for p in a.split("|") if p.strip()) for a in (add or [])]
    if any(not a for a in additions):
        raise ConfigError("A concept to add needs a name: write 'name' or 'name | another phrasing'.")
    removals = list(remove or [])
    if not additions and not removals:
        raise ConfigError("Nothing to change: name concepts to add or to remove.")
    _check_editable(record, path, additions, removals)
    original = read_text(path, what="concept bank file")
    new_text = _edited_text(path, additions, removals)
    _check_definition(path, new_text)
    _write_atomically(path, new_text)
    try:
        applied = apply_monitor(db, record.config, device=device)
        with db.engine.connect() as conn:
            previous = baseline_batches(conn, record.id)
        baseline = None
        if previous is not None and previous[0]:
            baseline = build_baseline(db, monitor, batches=previous[0], reservoir_size=previous[1]).to_dict()
    except Exception:
        _write_atomically(path, original)  # nothing half-way: the file says what the monitor uses
        raise
    notes = [] if baseline else ["the monitor has no baseline yet: build one with `t2c baseline build`"]
    return BankChange(monitor=monitor, bank_file=str(path), added=[a[0] for a in additions], removed=removals,
                      bank=applied.bank or "", bank_version=applied.bank_version or 0, concepts=applied.concepts,
                      baseline=baseline, notes=notes)


def _check_editable(record: MonitorRecord, path: Path, add: list[tuple[str, ...]], remove: list[str]) -> None:
    if path.suffix not in DEFINITION_SUFFIXES or not path.is_file():
        raise ConfigError(
            f"The bank of {record.name} is {path}, not a bank definition file (.yaml, .yml or .txt): edit the "
            f"definition it was encoded from and encode it again with `t2c concepts encode`, then "
            f"`t2c monitor apply`.")
    if not os.access(path, os.W_OK):
        raise ConfigError(f"The bank file {path} of {record.name} is not writable: nothing was changed.")
    known = {normalise_key(n): n for n in record.concept_names}
    missing = [n for n in remove if normalise_key(n) not in known]
    if missing:
        raise ConfigError(f"Not in the bank of {record.name}: {', '.join(map(clip, missing))}; it has: "
                          f"{', '.join(record.concept_names)}.")
    present = [known[normalise_key(a[0])] for a in add if normalise_key(a[0]) in known]
    if present:
        raise ConfigError(f"Already in the bank of {record.name}: {', '.join(present)}.")
    if len(known) - len(remove) + len(add) < 1:
        raise ConfigError(f"Removing {', '.join(map(clip, remove))} would leave the bank of {record.name} empty.")


def _check_definition(path: Path, text: str) -> None:
    """Parse the edited text as the file it will become (errors name the file; nothing written)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / path.name
        probe.write_text(text)
        try:
            load_bank_definition(probe)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(probe), str(path)) + " (nothing was changed)") from exc


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
