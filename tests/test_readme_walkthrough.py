"""The README's "your own images" commands, run as written, by a new user on the embedded default.

The shell block under "Monitoring a model, step by step" is taken from README.md itself and run with
bash in an empty directory: no database URL, no Prefect server, no T2C_HOME (so the embedded PostgreSQL
and the local Prefect server start under ``./.t2c`` as they would for the user). Only the two hub names
are replaced, by the shapes world's encoder and CLIP (no weights can be downloaded here), and the
folders it names are filled with the world's pictures: a sample to fit the aligner on, a training
sample, and today's images, half of them taken on grass. The block must fit an aligner, record the
monitor, ingest, build the baseline and audit; the audit must name the grass as the root cause, and its
report must open in Chromium and say so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import chromium, open_page

BIN = Path(sys.executable).parent
HUB_ENCODER = "timm:convnext_tiny.fb_in22k"
HUB_CLIP = "open_clip:ViT-B-32@laion2b_s34b_b79k"


def readme_quick_path(readme: str) -> str:
    """The first bash block of the README's step-by-step section (its "in short")."""
    section = readme.split("## Monitoring a model, step by step", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the step-by-step section has lost its bash block"
    return match.group(1)


def world_pictures(folder: Path, n: int, seed: int, shift: str | None = None) -> None:
    from t2c_monitor.world.generate import write_images

    write_images(folder, n, seed=seed, shift=[shift] if shift else None)
    (folder / "manifest.jsonl").unlink()  # the user's folders hold pictures, not the world's ground truth


def concepts_text() -> str:
    """A concepts.txt as a user writes it: one concept per line, phrasings separated by '|'."""
    from t2c_monitor.world.evaluate import default_bank_path

    lines, seen = [], set()
    for concept in yaml.safe_load(default_bank_path().read_text())["concepts"]:
        phrasings = [p for p in [concept["name"], *concept["phrasings"]] if p not in seen]  # "a red circle": once
        seen.update(phrasings)
        lines.append(" | ".join(phrasings))
    return "\n".join(lines) + "\n"


def test_the_readme_quick_path_runs_as_written(repo_root, quick_world, tmp_path):
    script = readme_quick_path((repo_root / "README.md").read_text())
    assert HUB_ENCODER in script and HUB_CLIP in script, "the README's example names changed: update this test"
    script = script.replace(HUB_ENCODER, quick_world.source_spec).replace(HUB_CLIP, quick_world.clip_spec)

    project = tmp_path / "project"
    world_pictures(project / "my-images", 500, seed=201)
    world_pictures(project / "training-sample", 300, seed=202)
    world_pictures(project / "todays-images", 200, seed=203, shift="background=grass:0.5")
    (project / "concepts.txt").write_text(concepts_text())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "T2C_"))}
    env.update(PATH=f"{BIN}:{env['PATH']}", T2C_DEVICE="cpu", COLUMNS="400",
               T2C_MODELS=os.environ["T2C_MODELS"])  # the session's cache of the vocabulary's embeddings
    done = subprocess.run(["bash", "-euo", "pipefail", "-x", "-c", script], cwd=project, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)  # in order, `-x` lines too
    out = done.stdout
    (tmp_path / "walkthrough.log").write_text(out)
    assert done.returncode == 0, out[-6000:]

    fit = re.search(r"held-out metrics.*?r2\W+([0-9.]+)", out, re.S)
    assert fit and float(fit.group(1)) > 0.8, f"aligner fit printed no good held-out R²:\n{out[:3000]}"
    assert (project / ".t2c" / "pgdata").is_dir(), "the embedded PostgreSQL ran under ./.t2c"
    assert (project / ".t2c" / "prefect" / "server.json").is_file(), "the local Prefect server ran under ./.t2c"

    audit_out = out.split("+ t2c audit", 1)[-1]
    roots = [line for line in audit_out.splitlines() if "root" in line.lower()]
    assert any("grass" in line for line in roots), f"the audit's roots do not name the grass:\n{audit_out[-4000:]}"
    reports = sorted((project / ".t2c" / "reports" / "my-camera").glob("audit-*/index.html"))
    assert len(reports) == 1, reports
    assert str(reports[0].relative_to(project)) in out or str(reports[0]) in out, "the audit printed its report's path"

    if chromium() is None:
        pytest.skip("no chromium to open the report with")
    visit = open_page(reports[0])
    assert not visit.console_errors and not visit.broken_images, (visit.console_errors, visit.broken_images)
    assert "grass" in visit.text and "my-camera" in visit.text, visit.text[:2000]

