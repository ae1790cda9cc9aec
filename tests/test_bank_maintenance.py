"""A maintained bank: concepts added and removed through the monitor's bank file make a new bank
version and a rebuilt baseline (from stored vectors, nothing embedded again), audits go on and
history stays comparable per concept; suggestions for drift the bank does not name; refusals that
change nothing."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_BANK, apply_tiny
from sqlalchemy import text

from t2c_monitor.audit import build_baseline, run_audit
from t2c_monitor.concepts.maintain import change_bank, suggest_concepts
from t2c_monitor.errors import ConfigError
from t2c_monitor.store.audits import concept_history
from t2c_monitor.store.monitors import get_monitor


@pytest.fixture
def own_bank(monitored, tiny_monitor_dir, tmp_path):
    """The tiny monitor reading a bank file of its own (the shared one stays as it is), with a baseline."""
    bank = tmp_path / "bank.yaml"
    bank.write_text("# the tiny bank, as a team keeps it\n" + TINY_BANK)
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", bank=str(bank))
    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    return monitored, bank


def _embedded_images(db) -> int:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM image WHERE status = 'ok'")).scalar_one()


def test_added_and_removed_concepts_make_a_new_version_and_a_rebuilt_baseline(own_bank):
    db, bank = own_bank
    before = run_audit(db, "tiny", batches=["dark"])
    images = _embedded_images(db)

    change = change_bank(db, "tiny", add=["snow | a snowy picture"], remove=["green"])
    assert (change.added, change.removed, change.concepts) == (["snow"], ["green"], 5)
    assert change.bank_version == 2 and change.baseline is not None
    assert change.baseline["batches"] == ["ref-1", "ref-2"] and change.baseline["n_sampled"] == 100
    written = bank.read_text()
    assert written.startswith("# the tiny bank") and "snow" in written and "green" not in written
    assert _embedded_images(db) == images, "no image is embedded or stored again"
    with db.session() as session:
        record = get_monitor(session, "tiny")
    assert record.concept_names == ["red", "blue", "at night", "a bright picture", "snow"]

    after = run_audit(db, "tiny", batches=["dark"])  # no manual step: the baseline is the new bank's
    assert after.flagged and {c.name for c in after.flagged} <= set(record.concept_names)
    with db.engine.connect() as conn:
        history = concept_history(conn, record.id, "at night")
    assert [h.audit_id for h in history] == [before.id, after.id], "history runs across bank versions"
    assert history[0].ks_stat == pytest.approx(history[1].ks_stat, abs=0.05)


def test_refusals_name_the_problem_and_change_nothing(own_bank):
    db, bank = own_bank
    text_before = bank.read_text()
    with pytest.raises(ConfigError, match="Not in the bank of tiny: 'purple'"):
        change_bank(db, "tiny", remove=["purple"])
    with pytest.raises(ConfigError, match="Already in the bank of tiny: red"):
        change_bank(db, "tiny", add=["Red"])
    with pytest.raises(ConfigError, match="needs a name"):
        change_bank(db, "tiny", add=[" | "])
    with pytest.raises(ConfigError, match="empty"):
        change_bank(db, "tiny", remove=["red", "green", "blue", "at night", "a bright picture"])
    with pytest.raises(ConfigError, match="twice|more than once|nothing was changed"):
        change_bank(db, "tiny", add=["snow", "snow | in the snow"])
    assert bank.read_text() == text_before
    with db.session() as session:
        assert get_monitor(session, "tiny").bank_version == 1


def test_suggestions_for_an_audits_unexplained_drift_and_accepting_one(own_bank):
    db, bank = own_bank
    dark = run_audit(db, "tiny", batches=["dark"])
    found = suggest_concepts(db, "tiny", dark.id, top=3)
    assert 1 <= len(found.suggestions) <= 3
    names = {s.name.lower() for s in found.suggestions}
    assert not names & {"red", "green", "blue", "at night", "a bright picture"}, "never a concept it has"
    assert found.bank_file == str(bank)

    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    run = CliRunner().invoke(app, ["concepts", "suggest", "--monitor", "tiny", "--audit", str(dark.id), "--top", "3",
                                   "--accept", "1", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout.strip().splitlines()[-1])
    accepted = out["accepted"]
    assert accepted["added"] == [out["suggestions"][0]["name"]] and accepted["baseline"] is not None
    assert out["suggestions"][0]["name"] in bank.read_text()

    missing = CliRunner().invoke(app, ["concepts", "suggest", "--monitor", "tiny", "--audit", "999999"])
    assert missing.exit_code == 2 and "no audit 999999" in missing.output
