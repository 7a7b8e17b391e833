"""`make sbom`: a CycloneDX SBOM of the runtime set (requirements.lock), run as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from tests.deploy.deploy_support import REPO
from tests.deploy.test_dockerfile import RUNTIME_LOCK, canonical, read_lock, uv_overrides


def test_make_sbom_lists_the_locked_runtime_set_with_its_hashes(tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    venv = Path(sys.executable).parent.parent  # this venv: make must not build another
    made = subprocess.run(
        ["make", "-s", "sbom", f"VENV={venv}", f"SBOM={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0 and not made.stderr.strip(), made.stdout + made.stderr
    bom = json.loads(out.read_text())
    assert bom["bomFormat"] == "CycloneDX" and Version(bom["specVersion"]) >= Version("1.5")
    assert bom["metadata"]["component"]["name"] == "pipeline-runtime"

    lock = read_lock(RUNTIME_LOCK)
    components = {canonical(c["name"]): c for c in bom["components"]}
    # The runtime set exactly (what the image installs), nothing of the dev set, each at its locked version.
    assert {name: c["version"] for name, c in components.items()} == {name: p.version for name, p in lock.items()}
    for name in ("starlette", "fastapi"):
        component = components[name]
        assert component["purl"] == f"pkg:pypi/{name}@{lock[name].version}"
        hashes = {f"sha256:{h['content']}" for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        assert hashes == lock[name].hashes
    # The web stack a scanner sees is the one the overrides ask for (past the starlette advisories).
    for override in uv_overrides():
        assert components[canonical(override.name)]["version"] in override.specifier, override
