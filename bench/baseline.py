"""This runtime as it was at an earlier git revision, served beside the working tree's in the same run
(`bench.run --baseline REV`): that revision's runtime/ and settings.json extracted with `git archive`
into a temporary directory, which a model repository links as `runtime/` in place of the working tree's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import BASELINE_PREFIX
from harness.models import REPO_ROOT
from harness.repository import project_settings

# What serving needs from the revision: the package, and the MLServer settings that name its classes.
PATHS = ("runtime", "settings.json")
# The baseline server's environment: bytecode written even if the caller's shell turns it off, since
# the compiled files it leaves in the extracted tree prove which `runtime` it imported (check_imported).
BYTECODE_ON = {"PYTHONDONTWRITEBYTECODE": ""}


def resolve(rev: str) -> str:
    """The commit `rev` names in this repository; ValueError when it names none."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise ValueError(f"--baseline: {rev!r} names no commit of {REPO_ROOT}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Baseline:
    """The revision as given (`rev`), the commit it names and the directory it is extracted to."""

    rev: str
    commit: str
    root: Path

    @property
    def kind(self) -> str:
        """The server's name in the results: ours@REV."""
        return BASELINE_PREFIX + self.rev

    @property
    def slug(self) -> str:
        """For directory and log names (a revision may hold / or ~)."""
        return "at-" + self.commit[:12]

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    def settings(self) -> dict[str, Any]:
        """The revision's settings.json minus addresses and ports."""
        return project_settings(self.root)

    def check_imported(self) -> str:
        """Raise unless a server imported this revision's `runtime` package. The tree is extracted
        without bytecode and nothing but the baseline server imports from it, so the package's compiled
        __init__ exists there only once that server has run `import runtime` from it."""
        pyc = Path(importlib.util.cache_from_source(str(self.runtime / "__init__.py")))
        if not pyc.exists():
            raise RuntimeError(f"{self.kind} did not import {self.runtime} (no {pyc.name} written there)")
        return f"imports runtime from {self.runtime} ({self.commit[:12]})"


@contextlib.contextmanager
def extracted(rev: str, keep: bool = False) -> Iterator[Baseline]:
    """The revision's runtime/ and settings.json in a temporary directory, deleted on the way out
    (also on errors) unless `keep`."""
    commit = resolve(rev)
    root = Path(tempfile.mkdtemp(prefix=f"pipeline-bench-{commit[:12]}-"))
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", commit, *PATHS], cwd=REPO_ROOT, capture_output=True)
        if archive.returncode:
            raise RuntimeError(f"git archive {commit} {' '.join(PATHS)}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
        yield Baseline(rev, commit, root)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
