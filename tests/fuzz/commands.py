"""Every leaf command of the CLI, with a strategy of its arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from .strategies import (
    DURATIONS,
    NUMBERS,
    TIMES,
    bank_files,
    feature_files,
    hostile_text,
    known_or_hostile,
    manifest_files,
    monitor_files,
    text_files,
)
from .tiny_monitor import HOSTILE_CONCEPTS
from .world import HOSTILE_BATCH, MANIFEST_BATCH, FuzzWorld


def leaf_commands() -> list[str]:
    """Every command ``t2c`` runs (a group that runs itself, such as ``t2c audit``, counts as one)."""
    import typer.main

    from t2c_monitor.cli import app

    def walk(command: Any, words: list[str]) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return [" ".join(words)]
        own = [" ".join(words)] if words and getattr(command, "invoke_without_command", False) else []
        return own + [name for key, sub in subcommands.items() for name in walk(sub, [*words, key])]

    return walk(typer.main.get_command(app), [])


@dataclass(frozen=True)
class Command:
    name: str
    args: st.SearchStrategy[list[Any]]
    tier: str  # parse: refused or answered before any work; read: reads the database; model: loads models
    result_exit: int | None = None  # a non-zero exit that reports a result rather than a refusal
    writes_pages: bool = False


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple[Any, ...]
    env: tuple[tuple[str, str], ...] = ()


def _opt(flag: str, values: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), st.just([flag]) if values is None else values.map(lambda v: [flag, v]))


def _req(flag: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return values.map(lambda v: [flag, v])


def _pos(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return values.map(lambda v: [v])


def _args(*parts: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*parts).map(lambda ps: [a for p in ps for a in p])


REFUSED = st.one_of(st.just(["--t2c-bogus"]), hostile_text(8).map(lambda t: ["--t2c-" + t]), st.just(["--help"]))
JSON = _opt("--json")


def _safe_name(text: str) -> str:
    name = text.replace("/", "_").replace("\x00", "").replace("..", "_").lstrip("-") or "empty"
    return name[:300]


@dataclass(frozen=True)
class Values:
    """The argument kinds, known values of the fuzz world mixed with hostile ones."""

    monitor: st.SearchStrategy[str]
    batch: st.SearchStrategy[str]
    batches: st.SearchStrategy[str]
    concept: st.SearchStrategy[str]
    audit: st.SearchStrategy[str]
    out: st.SearchStrategy[str]
    path: st.SearchStrategy[str]
    images: st.SearchStrategy[Any]
    encoder: st.SearchStrategy[str]
    clip: st.SearchStrategy[str]
    device: st.SearchStrategy[str]

    @classmethod
    def of(cls, world: FuzzWorld) -> Values:
        import yaml

        monitor = yaml.safe_load(world.monitor_file.read_text())["monitors"][0]
        images = world.root / "images"
        batch = known_or_hostile(["ref-1", "ref-2", HOSTILE_BATCH, MANIFEST_BATCH])
        out = st.one_of(hostile_text(12).map(lambda t: str(world.work / "out" / _safe_name(t))),
                        st.sampled_from(["/dev/null", "/dev/full", "/proc/self/t2c-fuzz", str(world.work / "a\nb")]))
        path = known_or_hostile(["/etc/passwd", "/proc/self/status", "/nonexistent/x", "-", str(images / "ref-1"),
                                 str(images / "day"), str(world.monitor_file)])
        return cls(monitor=known_or_hostile(["tiny", "tiny", "fuzzed"]), batch=batch,
                   batches=st.lists(batch, max_size=3).map(",".join),
                   concept=known_or_hostile(["red", "grass", "at night", *HOSTILE_CONCEPTS]),
                   audit=known_or_hostile([str(i) for i in world.audit_ids] + ["0", "-1", "99999999999"]),
                   out=out, path=path, images=st.one_of(path, manifest_files(world), st.just(str(images / "labelled"))),
                   encoder=known_or_hostile([monitor["encoder"], "timm:t2c-no-such", "timm:test_vit@/etc/passwd"]),
                   clip=known_or_hostile([monitor["clip"], "open_clip:/etc/passwd", "open_clip:t2c-no-such"]),
                   device=known_or_hostile(["cpu", "cuda", "meta", "cpu:99", "auto"]))


def command_table(world: FuzzWorld) -> dict[str, Command]:
    """A ``Command`` for every leaf command: what it is given, and how expensive it is. Commands that
    would start servers, train for minutes or replace this process (``demo``, ``serve``, ``world build``,
    ``server up``/``url``, ``db revision``, ``ui --start``) get only arguments they must refuse."""
    v = Values.of(world)
    table = [*_table_db(world, v), *_table_models(world, v), *_table_monitoring(world, v), *_table_reports(world, v)]
    return {c.name: c for c in table}


def _table_db(world: FuzzWorld, v: Values) -> list[Command]:
    revision = hostile_text(12).map(lambda t: "zz" + t)  # never a real revision: a fuzzer must not downgrade
    return [
        Command("demo", _args(_opt("--quick"), REFUSED), "parse"),
        Command("serve", _args(_opt("-m", v.monitor), REFUSED), "parse"),
        Command("world build", st.one_of(st.just(["--seed", "-1"]), st.just(["--threads", "0"]), REFUSED), "parse"),
        Command("server up", REFUSED, "parse"),
        Command("server url", REFUSED, "parse"),
        Command("db revision", st.one_of(st.just([]), _args(REFUSED, _req("-m", hostile_text()))), "parse"),
        Command("ui", _args(_opt("--port", NUMBERS)), "parse"),
        Command("server status", JSON, "parse", result_exit=1),
        Command("server stop", st.just([]), "parse"),
        Command("db upgrade", _opt("--revision", st.one_of(st.just("head"), revision)), "read"),
        Command("db downgrade", _pos(revision), "read"),
        Command("db status", JSON, "read"),
        Command("db stop", st.just([]), "read"),
        Command("db url", st.just([]), "read"),
        Command("db up", JSON, "read"),
        Command("monitor list", JSON, "read"),
        Command("monitor apply", _args(_pos(st.one_of(monitor_files(world), v.path)),
                                       st.sampled_from([["--check"], ["--check"], []]), JSON), "model"),
        Command("deployments list", _args(st.one_of(st.just([]), _pos(st.one_of(monitor_files(world), v.path))), JSON),
                "read"),
        Command("deployments prefect-yaml", _args(_pos(st.one_of(monitor_files(world), v.path)), _opt("--out", v.out),
                                                  _opt("--work-pool", hostile_text())), "parse"),
    ]


def _table_models(world: FuzzWorld, v: Values) -> list[Command]:
    images = world.root / "images"
    aligner = st.one_of(st.just(str(world.models / "aligner")), v.path)
    features = st.one_of(feature_files(), v.path)
    templates = known_or_hostile(["paper", "plain", "{} at dusk", "{}{}", "{0}", "{x}"])
    return [
        Command("concepts encode", _args(_pos(st.one_of(bank_files(), v.path)), _req("--clip", v.clip),
                                         _req("--out", v.out), _opt("--template", templates),
                                         _opt("--classes", hostile_text()), _opt("--classes-file", text_files()),
                                         _opt("--name", hostile_text()), _opt("--version", NUMBERS),
                                         _opt("--batch-size", NUMBERS), JSON), "model"),
        Command("aligner fit", _args(_req("--out", v.out), st.one_of(
            _req("--features", features), _args(_req("--images", v.path), _req("--encoder", v.encoder),
                                                _req("--clip", v.clip))),
            _opt("--method", known_or_hostile(["exact", "sgd"])),
            _opt("--ridge", known_or_hostile(["auto", "0", "1e-3"])),
            _opt("--holdout", NUMBERS), _opt("--chunk-rows", NUMBERS),
            _opt("--precision", known_or_hostile(["mixed"])), _opt("--device", v.device), JSON), "model"),
        Command("aligner eval", _args(_pos(aligner), _req("--features", features), _opt("--chunk-rows", NUMBERS),
                                      _opt("--source-accuracy", NUMBERS), JSON), "model"),
        Command("zeroshot", _args(_pos(st.one_of(st.just(str(images / "labelled")), v.path)),
                                  _req("--encoder", v.encoder), _req("--aligner", aligner), _req("--clip", v.clip),
                                  _opt("--template", templates), _opt("--batch-size", NUMBERS), JSON), "model"),
        Command("decoder train", _args(_req("--clip", v.clip), _req("--lm", known_or_hostile([str(world.work)])),
                                       _req("--corpus", st.one_of(text_files(), v.path)), _req("--out", v.out),
                                       _opt("--steps", NUMBERS), _opt("--noise-norm", NUMBERS)), "model"),
        Command("world images", _args(_pos(v.out), _req("--n", st.sampled_from(["0", "1", "2", "-1", "x", "", "1.5"])),
                                      _opt("--seed", NUMBERS), _opt("--format", known_or_hostile(["png", "jpeg"])),
                                      _opt("--shift", known_or_hostile(["night=0.5", "color=purple:0.4"])), JSON),
                "model"),
        Command("cbm fit", _args(_pos(v.images), _req("-m", v.monitor), _req("--out", v.out),
                                 _opt("--label-key", known_or_hostile(["label"])), _opt("--test-fraction", NUMBERS),
                                 _opt("--device", v.device)), "model"),
        Command("cbm eval", _args(_pos(v.images), _req("-m", v.monitor),
                                  _opt("--model", known_or_hostile([str(world.work / "cbm")])),
                                  _opt("--label-key", hostile_text()), JSON), "model"),
        Command("cbm explain", _args(_pos(v.images), _req("-m", v.monitor),
                                     _opt("--model", known_or_hostile([str(world.work / "cbm")])),
                                     _opt("--top", NUMBERS), _opt("--misclassified"), JSON), "model"),
        Command("decode", _args(_req("-m", v.monitor), st.one_of(
            _req("--audit", v.audit), _req("--vectors", st.one_of(feature_files(key="vectors"), v.path)),
            _req("--images", v.images), st.just(["--class-head"]), st.just([])),
            _opt("--decoder", known_or_hostile(["vocab", "prefix", "guided"])),
            _opt("--mode", known_or_hostile(["sparse"])),
            _opt("--top", NUMBERS), st.just(["--bank-only"]), JSON), "model"),
        Command("concepts add", _args(st.lists(v.concept, min_size=1, max_size=2), _req("-m", v.monitor)), "model"),
        Command("concepts remove", _args(st.lists(v.concept, min_size=1, max_size=2), _req("-m", v.monitor)), "model"),
    ]


def _table_monitoring(world: FuzzWorld, v: Values) -> list[Command]:
    images = world.root / "images"
    source = st.one_of(manifest_files(world), v.path, st.sampled_from([str(images / "day"), str(images / "ref-1")]))
    constraint = st.one_of(st.tuples(v.concept, st.sampled_from(["+", "-", ""]), NUMBERS).map(
        lambda t: f"{t[0]}:{t[1]}{t[2]}"), hostile_text())
    window = st.one_of(_opt("--window", DURATIONS), _args(_opt("--since", TIMES), _opt("--until", TIMES)))
    return [
        Command("ingest", _args(_pos(source), _req("-m", v.monitor), _opt("--batch-id", v.batch),
                                st.sampled_from([["--no-flow"], ["--no-flow"], ["--workers", "0"]]), JSON), "model"),
        Command("batches list", _args(_req("-m", v.monitor), _opt("--status", known_or_hostile(["stored", "failed"])),
                                      _opt("--limit", NUMBERS), JSON), "read"),
        Command("baseline build", _args(_req("-m", v.monitor), _opt("--batches", v.batches), _opt("--last", NUMBERS),
                                        _opt("--reservoir", NUMBERS), _opt("--seed", NUMBERS), JSON), "read"),
        Command("audit", _args(_opt("-m", v.monitor), st.one_of(_opt("--last", NUMBERS), _opt("--batches", v.batches),
                                                                window), _opt("--no-alerts"), st.just(["--no-flow"]),
                               JSON), "model", writes_pages=True),
        Command("audit history", _args(_req("-m", v.monitor), _req("-c", v.concept), _opt("--limit", NUMBERS), JSON),
                "read"),
        Command("audit list", _args(_req("-m", v.monitor), _opt("--limit", NUMBERS), JSON), "read"),
        Command("search", _args(st.one_of(st.lists(constraint, min_size=1, max_size=3), _req("--text", hostile_text()),
                                          _req("--index", known_or_hostile(["show", "build", "drop", "rebuild"]))),
                                _req("-m", v.monitor), _opt("--batch", v.batch), window,
                                _opt("--where", hostile_text()), _opt("--top", NUMBERS), _opt("--raw"),
                                _opt("--html", v.out.map(lambda p: p + ".html")), JSON), "model", writes_pages=True),
        Command("concepts suggest", _args(_req("-m", v.monitor), _req("--audit", v.audit), _opt("--top", NUMBERS),
                                          _opt("--accept", st.sampled_from(["0", "-1", "x"])), JSON), "model"),
        Command("alerts list", _args(_req("-m", v.monitor), _opt("--limit", NUMBERS), JSON), "read"),
        Command("alerts retry", _args(_opt("-m", v.monitor), JSON), "read", result_exit=1),
        Command("retention apply", _args(_opt("-m", v.monitor), _opt("--older-than", DURATIONS), st.just(["--dry-run"]),
                                         _opt("--no-vacuum"), JSON), "read"),
    ]


def _table_reports(world: FuzzWorld, v: Values) -> list[Command]:
    window = st.one_of(_opt("--window", DURATIONS), _args(_opt("--since", TIMES), _opt("--until", TIMES)))
    return [
        Command("report", _args(_opt("-m", v.monitor), _opt("--audit", v.audit), JSON), "model", writes_pages=True),
        Command("report dataset", _args(_req("-m", v.monitor), st.one_of(_opt("--batches", v.batches), window), JSON),
                "read", writes_pages=True),
        Command("report digest", _args(_req("-m", v.monitor), window, st.just(["--no-refresh"]), _opt("--send"), JSON),
                "read", writes_pages=True),
    ]
