"""Packaging hook: a wheel carries the Alembic migrations, so an installed t2c-monitor can migrate.

The brief keeps the revisions in the top-level ``migrations/``; a wheel installs only packages,
so ``build_py`` copies that directory into ``t2c_monitor/store/_migrations`` of the build, where
``t2c_monitor.store.migrate`` looks first (a source checkout uses ``migrations/`` itself).
Everything else about the package is declared in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "migrations"


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "t2c_monitor" / "store" / "_migrations"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithMigrations})
