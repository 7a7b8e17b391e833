"""`make serve-features`: the default server plus a model that looks its features up by entity id.

Starts a throw-away PostgreSQL (harness.postgres) with the demo table `diabetes_features`
(`patient-0000` .. `patient-0441`, the bundled dataset's rows), writes a repository in a temp dir
with what `make serve` serves (every version in models/ that loads, and the unversioned aliases) and
`diabetes-by-id` (diabetes v1 with a feature store), and runs `mlserver start` on it in the
foreground on the ports `make serve` uses. A version that does not load is named, one line each, and
left out (MLServer would stop at startup on it). Ctrl-C stops both.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.models import MODELS_DIR, alias_files
from harness.postgres import load_feature_table, start_cluster
from harness.repository import add_model, link_model, make_repository
from pipeline_tools.package import serve_port
from runtime.core.artifacts import load_pipeline
from runtime.core.errors import PipelineError
from runtime.core.predictor import compile_predictor

DEMO_MODEL = "diabetes-by-id"
TABLE = "diabetes_features"


def load_problem(version_dir: Path) -> str | None:
    """Why the runtime would refuse this version directory at load, or None: its artifacts verified
    and loaded, its predictor compiled and checked, as the runtime does."""
    try:
        compile_predictor(load_pipeline(version_dir))
    except PipelineError as exc:
        return str(exc)
    return None


def link_servable(root: Path) -> None:
    """Link each version of models/ that loads into root/models, and copy each alias whose version
    is there: the same models, and the same version for an unversioned request, as `make serve`."""
    for settings in sorted(MODELS_DIR.glob("*/*/model-settings.json")):
        version_dir = settings.parent
        problem = load_problem(version_dir)
        if problem is None:
            link_model(root, str(version_dir.relative_to(MODELS_DIR)))
        else:
            print(f"skipping {version_dir.relative_to(MODELS_DIR.parent)}: {problem}", flush=True)
    for alias in alias_files():
        target = root / alias.relative_to(MODELS_DIR.parent)
        uri = json.loads(alias.read_text())["parameters"]["uri"]
        if (target.parent / uri).is_dir():
            shutil.copy(alias, target)


def main() -> int:
    pg = start_cluster()
    root = Path(tempfile.mkdtemp(prefix="pipeline-features-"))
    try:
        load_feature_table(pg, TABLE)
        make_repository(root, workers=0)
        link_servable(root)
        dsn = pg.write_dsn_file(root / "features.dsn")
        add_model(root, DEMO_MODEL, extra={"feature_store": {"dsn_file": str(dsn), "table": TABLE}})
        print(
            f"feature store: {TABLE} on 127.0.0.1:{pg.port}; try:\n"
            f"  curl -s localhost:{serve_port()}/v2/models/{DEMO_MODEL}/infer -H 'content-type: application/json' "
            '-d \'{"inputs": [{"name": "entity_id", "shape": [2], "datatype": "BYTES", '
            '"data": ["patient-0001", "patient-0002"]}]}\'',
            flush=True,
        )
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlserver"), "start", str(root)])
        # SIGTERM as well as Ctrl-C: the server drains and stops, then the database.
        signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))
        while True:
            try:
                return server.wait()
            except KeyboardInterrupt:
                server.send_signal(signal.SIGINT)
    finally:
        pg.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
