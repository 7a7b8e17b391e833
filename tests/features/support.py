"""The feature store suite's servers and clients: a real PostgreSQL cluster (harness.postgres)
with the diabetes feature table, and `mlserver start .` serving diabetes v1 looking its features
up there. Like every client-side suite this never imports mlserver (the protobuf trap)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
import tritonclient.grpc as tgrpc

from harness.models import dataset
from harness.postgres import Postgres, load_feature_table, start_cluster
from harness.repository import add_model, make_repository
from harness.server import Server

TABLE = "diabetes_features"
HTTP_TIMEOUT_S = 15.0


def cluster() -> Iterator[Postgres]:
    """A fixture's body: a throw-away cluster with the feature table, closed at the end."""
    pg = start_cluster()
    try:
        load_feature_table(pg, TABLE)
        yield pg
    finally:
        pg.close()


def store_options(dsn_file: Path, **overrides: Any) -> dict[str, Any]:
    # A lookup budget for a shared, noisy machine; the default (50 ms) is for a quiet one.
    return {"feature_store": {"dsn_file": str(dsn_file), "table": TABLE, "lookup_timeout_ms": 1000, **overrides}}


def launch(
    root: Path,
    pg: Postgres,
    models: dict[str, dict[str, Any] | None],
    ready: Iterable[str] = (),
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    workers: int | None = 0,
    source: str = "diabetes/1",
) -> Server:
    """A repository with diabetes v1 (or `source`, a model version directory) under each name in
    `models` (its feature_store overrides; None: a plain feature-vector model), launched."""
    make_repository(root, workers=workers, settings=settings)
    dsn_file = pg.write_dsn_file(root / "features.dsn")
    for name, overrides in models.items():
        extra = store_options(dsn_file, **overrides) if overrides is not None else {}
        add_model(root, name, source=source, extra=extra)
    return Server.launch(root / "server.log", root=root, models=[(m, None) for m in (ready or models)], env=env)


def rows_of(ids: list[str]) -> np.ndarray:
    """The dataset rows the feature table holds under these ids (patient-<row index>)."""
    return dataset("diabetes")[[int(i.removeprefix("patient-")) for i in ids]]


def rest_by_id(
    server: Server,
    model: str,
    ids: list[str],
    extra_inputs: list[dict] | None = None,
    parameters: dict | None = None,
    session: requests.Session | None = None,
    headers: dict | None = None,
    timeout: float = HTTP_TIMEOUT_S,
    outputs: Sequence[str] = (),
) -> requests.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "entity_id", "shape": [len(ids)], "datatype": "BYTES", "data": ids}, *(extra_inputs or [])]
    }
    if parameters:
        body["parameters"] = parameters
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return (session or requests).post(
        f"{server.http_url}/v2/models/{model}/infer", json=body, headers=headers or {}, timeout=timeout
    )


def rest_by_features(server: Server, model: str, x: np.ndarray) -> requests.Response:
    body = {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]}
    return requests.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=HTTP_TIMEOUT_S)


def grpc_by_id(
    client: tgrpc.InferenceServerClient,
    model: str,
    ids: list[str],
    columns: dict[str, np.ndarray] | None = None,
    timeout: float | None = None,
    outputs: Sequence[str] = (),
) -> tgrpc.InferResult:
    """`columns` beside the ids: FP64, or BYTES for an array of strings."""
    inputs = [_grpc_strings("entity_id", ids)]
    for name, values in (columns or {}).items():
        if np.asarray(values).dtype.kind in "OUS":
            inputs.append(_grpc_strings(name, list(values)))
            continue
        column = tgrpc.InferInput(name, [len(values)], "FP64")
        column.set_data_from_numpy(np.asarray(values, dtype=np.float64))
        inputs.append(column)
    requested = [tgrpc.InferRequestedOutput(o) for o in outputs] or None
    return client.infer(model, inputs, outputs=requested, client_timeout=timeout)


def _grpc_strings(name: str, values: Sequence[str]) -> tgrpc.InferInput:
    tensor = tgrpc.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor
