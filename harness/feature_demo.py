"""`make serve-features`: the default server plus a model that looks its features up by entity id.

Starts a throw-away PostgreSQL (harness.postgres) with the demo table `diabetes_features`
(`patient-0000` .. `patient-0441`, the bundled dataset's rows), writes a repository in a temp dir
with the shipped models and `diabetes-by-id` (diabetes v1 with a feature store), and runs
`mlserver start` on it in the foreground on MLServer's usual ports. Ctrl-C stops both.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.models import MODELS_DIR
from harness.postgres import load_feature_table, start_cluster
from harness.repository import add_model, link_model, make_repository

DEMO_MODEL = "diabetes-by-id"
TABLE = "diabetes_features"


def main() -> int:
    pg = start_cluster()
    root = Path(tempfile.mkdtemp(prefix="pipeline-features-"))
    try:
        load_feature_table(pg, TABLE)
        make_repository(root, workers=0)
        for shipped in sorted(MODELS_DIR.iterdir()):  # as `make serve` serves them
            if shipped.is_dir():
                link_model(root, shipped.name)
        dsn = pg.write_dsn_file(root / "features.dsn")
        add_model(root, DEMO_MODEL, extra={"feature_store": {"dsn_file": str(dsn), "table": TABLE}})
        print(
            f"feature store: {TABLE} on 127.0.0.1:{pg.port}; try:\n"
            f"  curl -s localhost:8080/v2/models/{DEMO_MODEL}/infer -H 'content-type: application/json' "
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
