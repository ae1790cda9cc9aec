"""Search and concept bottleneck models on the quick shapes world, through the command line, against the
world's ground truth (each image's true factors come with it from the generator's manifest).

One module database holds a quick-world monitor with a batch and a shifted batch (most
backgrounds grass); the tests read it, and each adds only what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import drop_database, make_database
from typer.testing import CliRunner

from t2c_monitor.cli import app

N_IMAGES = 400


@pytest.fixture(scope="module")
def world_db(quick_world, quick_aligner, pg_server_url, tmp_path_factory):
    """(database URL, work dir): the quick world's monitor ``world`` with batch ``world-batch`` ingested
    from its manifest, and a batch ``grassy`` in which 60% of the backgrounds are grass."""
    from t2c_monitor.ingest import ingest
    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database
    from t2c_monitor.world.generate import write_images
    from t2c_monitor.world.search_check import world_monitor

    url = make_database(pg_server_url)
    root = tmp_path_factory.mktemp("world-search")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("T2C_DATABASE_URL", url)
        reset_settings_cache()
        db = open_database()
        world_monitor(db, quick_world, quick_aligner, root, n=N_IMAGES, seed=31337)
        grassy = write_images(root / "grassy", 200, seed=777, shift=["background=grass:0.6"])
        ingest(db, "world", grassy, batch_id="grassy")
        db.engine.dispose()
    reset_settings_cache()
    yield url, root
    drop_database(pg_server_url, url)


@pytest.fixture
def cli(world_db, monkeypatch):
    """Run ``t2c`` in-process on the module's database; returns the parsed JSON of a ``--json`` command."""
    from t2c_monitor.settings import reset_settings_cache

    monkeypatch.setenv("T2C_DATABASE_URL", world_db[0])
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    reset_settings_cache()

    def run(*args: str, code: int = 0):
        out = CliRunner().invoke(app, list(args))
        assert out.exit_code == code, out.output
        return json.loads(out.stdout) if "--json" in args and code == 0 else out.output

    return run


def test_concept_logic_finds_what_the_constraints_say(cli, world_db):
    """Queries over the quick world's colours and effects. Its CLIP (120 training steps) tells colours apart
    poorly, so the full world's figures are the bench's; here the constraints must still do far better than
    chance, and the counts must narrow step by step as the paper's Figure 18."""
    queries = {
        ("night:+1", "snow:-0"): lambda m: m["night"] and not m["snow"],
        ("text:at night:+1", "sky:+1"): lambda m: m["night"] and m["background"] == "sky",
        ("grass:+1.5", "fog:-0.5"): lambda m: m["background"] == "grass" and not m["fog"],
    }
    for constraints, truth in queries.items():
        found = cli("search", "--monitor", "world", *constraints, "--batch", "world-batch", "--top", "20", "--json")
        counts = found["counts"]
        assert counts[0] == N_IMAGES and all(a >= b for a, b in zip(counts, counts[1:], strict=False)), counts
        hits = found["hits"]
        assert hits, (constraints, counts)
        base_rate = 0.2 * 0.8 if "snow:-0" in constraints else 0.2 * (0.2 if "sky:+1" in constraints else 0.8)
        precision = sum(truth(h["meta"]) for h in hits) / len(hits)
        assert precision >= min(0.9, 3 * base_rate), (constraints, precision, [h["meta"] for h in hits])
    # metadata narrows the corpus: every hit is a star whatever the constraints say
    stars = cli("search", "--monitor", "world", "night:+0", "--where", "shape=star", "--json")
    assert stars["hits"] and {h["meta"]["shape"] for h in stars["hits"]} == {"star"}


def test_text_search_with_the_index_and_its_recall(cli):
    cli("search", "--monitor", "world", "--index", "build", "--json")
    found = cli("search", "--monitor", "world", "--text", "a picture at night", "--top", "10", "--recall", "--json")
    assert len(found["hits"]) == 10 and found["recall"] >= 0.8
    assert sum(h["meta"]["night"] for h in found["hits"]) >= 8, [h["meta"] for h in found["hits"]]
    narrowed = cli("search", "--monitor", "world", "--text", "a picture at night", "--top", "15", "--batch", "grassy",
                   "--json")
    assert len(narrowed["hits"]) == 15 and {h["batch"] for h in narrowed["hits"]} == {"grassy"}
    assert cli("search", "--monitor", "world", "--index", "drop", "--json")["exists"] is False


def test_cbm_fit_eval_explain_and_the_audit_reports_class_evidence(cli, world_db, quick_world, tmp_path):
    from t2c_monitor.cbm.model import ConceptBottleneck
    from t2c_monitor.errors import SpaceMismatchError

    url, root = world_db
    manifest = root / "world-batch" / "manifest.jsonl"
    # the background (the quick world's source model learned too little shape for a shape classifier; the
    # full world's shape CBM is bench/world.py's)
    fitted = cli("cbm", "fit", str(manifest), "--monitor", "world", "--label-key", "background", "--out",
                 str(tmp_path / "cbm"), "--json")
    assert fitted["classes"] == ["brick", "grass", "gray", "sand", "sky"]
    assert fitted["n_test"] >= 60 and fitted["accuracy"] > 0.6, fitted  # chance is 0.2
    assert fitted["accuracy"] >= 0.9 * fitted["probe_accuracy"], fitted
    assert 0 < sum(len(v) for v in fitted["concepts_used"].values()) < 5 * 21  # the head is sparse

    evaluated = cli("cbm", "eval", str(root / "grassy" / "manifest.jsonl"), "--monitor", "world", "--model",
                    str(tmp_path / "cbm"), "--json")
    assert evaluated["n_images"] == 200 and evaluated["probe_accuracy"] is not None
    wrong = cli("cbm", "explain", str(root / "grassy" / "manifest.jsonl"), "--monitor", "world", "--model",
                str(tmp_path / "cbm"), "--misclassified", "--top", "3", "--json")["explanations"]
    assert wrong and all(not e["correct"] and e["label"] != e["predicted"] for e in wrong)
    names = set(fitted["concepts_used"][wrong[0]["predicted"]])
    assert wrong[0]["evidence"] and {s["concept"] for s in wrong[0]["evidence"]} <= names
    assert all(0 < s["share"] <= 1 for s in wrong[0]["evidence"] + wrong[0]["separating"])

    # saved and loaded: the same predictions; refused for another CLIP space, saying how to fix it
    model = ConceptBottleneck.load(tmp_path / "cbm")
    assert model.classes == tuple(fitted["classes"]) and model.probe is not None
    with pytest.raises(SpaceMismatchError, match="t2c cbm fit"):
        ConceptBottleneck.load(tmp_path / "cbm", expect_clip=model.source)

    # a monitor that names the model: its audit of the grass-heavy batch says the grass class grew
    import yaml

    from t2c_monitor.apply import apply_monitor
    from t2c_monitor.audit import audit_window, build_baseline, load_audit, write_report
    from t2c_monitor.monitors import load_monitor_file
    from t2c_monitor.store import open_database

    document = yaml.safe_load((root / "monitors.yaml").read_text())
    document["monitors"][0]["cbm"] = str(tmp_path / "cbm")
    (tmp_path / "monitors.yaml").write_text(yaml.safe_dump(document))
    db = open_database()
    apply_monitor(db, load_monitor_file(tmp_path / "monitors.yaml")[0])
    build_baseline(db, "world", batches=["world-batch"])
    outcome = audit_window(db, "world", batches=["grassy"])
    summary = outcome.summary
    shifts = {c.name: c for c in summary.evidence.classes}
    assert shifts["grass"].share_after > shifts["grass"].share_before + 0.2, summary.evidence
    assert summary.evidence.classes[0].name == "grass"
    assert "grass" in dict(shifts["grass"].concepts) and dict(shifts["grass"].concepts)["grass"] > 0
    # kept with the audit, and in its report
    assert load_audit(db, "world", summary.id).summary.evidence == summary.evidence
    page = Path(write_report(db, outcome, tmp_path / "reports").report).read_text()
    assert "Classes, through the concept bottleneck model" in page and "grass" in page
    db.engine.dispose()
