"""``t2c search``: concept logic and text search over a monitor's stored images, and its search index."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import MAX_ROWS, JsonOption, console, emit_json, shown, styled, time_window, user_errors

INDEX_ACTIONS = ("show", "build", "rebuild", "drop")


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    constraints: list[str] = typer.Argument(
        None, help="Constraints CONCEPT:+K or CONCEPT:-K: similarity at least K standard deviations above (+) or "
        "below (-) the concept's mean over the corpus, e.g. night:+2 red:+1.5 snow:-0. A concept is a name of the "
        "monitor's bank, or free text written text:WORDS (text:a blurry star:+1)."),
    monitor: str = typer.Option(..., "--monitor", "-m", help="the monitor whose stored images are searched"),
    text_query: str = typer.Option(None, "--text", help="nearest images to this text (instead of constraints)"),
    top: int = typer.Option(20, "--top", "--limit", min=1, max=MAX_ROWS, help="images returned"),
    exact: bool = typer.Option(False, "--exact", help="text search: exact search, not the HNSW index"),
    recall: bool = typer.Option(False, "--recall", help="text search: also search exactly, report the index's recall"),
    batches: list[str] = typer.Option(None, "--batch", help="only these batches (repeatable)"),
    window: str = typer.Option(None, "--window", help="only images stored in this period before now, e.g. 7d"),
    since: str = typer.Option(None, "--since", help="only images stored from this ISO time"),
    until: str = typer.Option(None, "--until", help="only images stored before this ISO time"),
    where: list[str] = typer.Option(None, "--where", help="metadata KEY=VALUE the images' manifest rows carry "
                                    "(repeatable; all must hold), e.g. --where label=cat"),
    raw: bool = typer.Option(False, "--raw", help="raw cosine similarity to the concepts (default: to the concepts "
                             "less the bank's mean concept, which ranks by what sets a concept apart)"),
    html: Path = typer.Option(None, "--html", help="write a contact sheet of the hits (an .html file or a folder)"),
    index: str = typer.Option(None, "--index", help="the search index of the monitor's width: show, build, rebuild "
                              "or drop (build after bulk loads: every later write into an indexed width is slower)"),
    as_json: bool = JsonOption,
) -> None:
    """Find stored images by concept logic or by text (the paper's Section 5.3)."""
    from t2c_monitor.search import use_cases
    from t2c_monitor.search.query import parse_constraints, parse_where
    from t2c_monitor.store import open_database

    given = [flag for flag, on in (("CONSTRAINT...", bool(constraints)), ("--text", text_query is not None),
                                   ("--index", index is not None)) if on]
    if len(given) != 1:
        raise typer.BadParameter("give constraints, --text TEXT or --index ACTION (one of them)",
                                 param_hint=" / ".join(given) or "CONSTRAINT... / --text / --index")
    if index is not None and index not in INDEX_ACTIONS:
        raise typer.BadParameter(f"{index!r} is not one of {', '.join(INDEX_ACTIONS)}", param_hint="--index")
    if (exact or recall) and text_query is None:
        raise typer.BadParameter("--exact and --recall are for --text searches", param_hint="--exact/--recall")
    start, end = time_window(window, since, until)
    with user_errors():
        db = open_database()
        if index is not None:
            info = use_cases.search_index(db, monitor, build=index == "build", rebuild=index == "rebuild",
                                          drop=index == "drop")
            if as_json:
                emit_json(info.to_dict())
                return
            state = f"built, {info.bytes / 2**20:.1f} MiB" if info.exists else "not built"
            took = f" in {info.build_seconds:.1f} s" if info.build_seconds is not None else ""
            console.print(f"search index {info.name} ({info.dim}-d, {info.rows} stored vectors): {state}{took}",
                          highlight=False)
            return
        filters = {"batches": batches or [], "since": start, "until": end, "where": parse_where(where or []),
                   "raw": raw}
        if text_query is not None:
            result = use_cases.text_search(db, monitor, text_query, top=top, exact=exact, recall=recall, **filters)
        else:
            result = use_cases.concept_search(db, monitor, parse_constraints(constraints), limit=top, **filters)
        sheet = None
        if html is not None:
            from t2c_monitor.reports.search import write_search_sheet

            sheet = write_search_sheet(html, result)
    if as_json:
        emit_json(result.to_dict() | {"html": str(sheet) if sheet else None})
        return
    _print(result)
    if sheet:
        console.print(f"contact sheet: {sheet}", highlight=False)


def _print(result) -> None:
    from rich.table import Table

    from t2c_monitor.search.use_cases import LogicResult

    if isinstance(result, LogicResult):
        steps = "  ->  ".join([f"{result.counts[0]} images"] + [f"{c.label}: {n}" for c, n in
                                                               zip(result.constraints, result.counts[1:], strict=True)])
        console.print(f"{result.corpus.describe()}: {steps}", highlight=False)
        for note in result.notes:
            console.print(styled("[yellow]note:[/] {}", note))
        labels = [c.label for c in result.constraints]
    else:
        how = f"HNSW, ef_search {result.ef_search}" if result.method == "hnsw" else "exact"
        recall = f", recall against exact {result.recall:.2f}" if result.recall is not None else ""
        console.print(f"nearest to {result.text!r} ({how}, {result.seconds * 1000:.0f} ms{recall})", highlight=False)
        for note in result.notes:
            console.print(styled("[yellow]note:[/] {}", note))
        labels = ["similarity"]
    table = Table()
    for column in ("uri", "batch", *map(shown, labels)):
        table.add_column(column, justify="left" if column in ("uri", "batch") else "right", overflow="fold")
    for hit in result.hits:
        table.add_row(shown(hit.uri), shown(hit.batch), *(f"{s:.3f}" for s in hit.similarities))
    console.print(table)
