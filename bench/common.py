"""Shared pieces of the benchmark: request bodies, model repositories for each server, and how
each server is launched (harness.server.Server for all three).

Never imports mlserver or kserve (each server runs in its own process); the gRPC request
protobuf comes from tritonclient, imported lazily (harness.v2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.models import DIABETES, REPO_ROOT, pipeline, sample_rows
from harness.repository import add_model, make_repository, project_settings
from harness.server import Server
from harness.v2 import json_tensor, pb_2d_request, pb_request, pb_tensor

if TYPE_CHECKING:  # harness.postgres imports psycopg: only a run with --lookup needs it
    from bench.baseline import Baseline
    from harness.postgres import Postgres

REPO = REPO_ROOT
RESULTS = REPO / "bench" / "results"
MODEL_NAME = DIABETES
MODEL_VERSION = "1"
SHADOW_NAME = "diabetes-shadow"
FEATURE_TABLE = "diabetes_features"
LOOKUP_ROW = 1  # every lookup request asks for this dataset row's id (patient-0001)
# Far above a lookup's normal milliseconds: a slow round at c=16 on 2 shared cores shows as
# latency in the table, not as 503s that would void the run.
LOOKUP_TIMEOUT_MS = 1000
READY_TIMEOUT_S = 180.0
# One BLAS thread per server process: the box has 2 cores and the load generator needs one.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------- the pipeline and request bodies


# What the benchmark serves under the name `diabetes`: the shipped linear model (the folded fast
# path), a random forest fitted here on the same data (scikit-learn's own estimator), or `columns`:
# a mixed-type table (numeric and string columns) through a ColumnTransformer into gradient boosting,
# sent as MLServer's PandasCodec request (one tensor per column).
@dataclass(frozen=True)
class BenchModel:
    """What varies by bench model: the fitted pipeline, n request rows and the request built from them."""

    pipeline: Callable[[], Any]
    rows: Callable[[int], Any]  # float64 [n, F] or a DataFrame of n rows
    rest_body: Callable[[Any], bytes]
    grpc_request: Callable[[Any], Any]


def bench_pipeline(model: str = "linear") -> Any:
    """The benchmark model as one fitted scikit-learn Pipeline."""
    return BENCH_MODELS[model].pipeline()


def _linear() -> Any:
    return pipeline(MODEL_NAME, MODEL_VERSION).sklearn_pipeline()


@functools.lru_cache(maxsize=1)
def _forest() -> Any:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True)
    forest = RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    return make_pipeline(StandardScaler(), forest).fit(x, y)


def bench_rows(n: int) -> np.ndarray:
    """n real rows of the diabetes data set, float64 [n, 10]."""
    return sample_rows(MODEL_NAME, n)


def rest_body(X: np.ndarray) -> bytes:
    """The V2 JSON request: one FP64 [N, F] tensor, data flat (accepted by all three servers)."""
    body = {"inputs": [json_tensor("input-0", np.asarray(X, dtype=np.float64), flat=True)]}
    return json.dumps(body, separators=(",", ":")).encode()


def grpc_request(X: np.ndarray) -> Any:
    """The same request as a ModelInferRequest (typed fp64_contents)."""
    return pb_2d_request(MODEL_NAME, X, name="input-0")


# ---------------------------------------------------------------- the `columns` model

COLUMNS_NUMERIC = ("age", "income", "tenure", "score")
COLUMNS_STRING = {
    "city": ("paris", "rome", "london", "berlin", "madrid"),
    "plan": ("basic", "plus", "pro"),
    "channel": ("web", "store", "phone", "partner"),
}
COLUMNS_TABLE_ROWS = 2000
# A column's V2 datatype in the PandasCodec request, by numpy dtype kind (float, object = str).
_PANDAS_DATATYPES = {"f": "FP64", "O": "BYTES"}


@functools.lru_cache(maxsize=1)
def columns_table() -> tuple[pd.DataFrame, np.ndarray]:
    """A deterministic synthetic table (4 numeric, 3 string columns) and a 0/1 label that depends on
    both kinds, so the fitted trees split on the one-hot columns too."""
    rng = np.random.default_rng(0)
    n = COLUMNS_TABLE_ROWS
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).round(1),
            "income": rng.lognormal(10.5, 0.5, n).round(2),
            "tenure": rng.uniform(0, 20, n).round(2),
            "score": rng.normal(0, 1, n).round(3),
            **{name: rng.choice(values, n) for name, values in COLUMNS_STRING.items()},
        }
    )
    logit = (
        0.05 * (frame.age - 40)
        + 0.8 * frame.score
        - 0.04 * frame.tenure
        + 1.0 * (frame.plan == "pro")
        - 0.7 * (frame.channel == "phone")
        + 0.5 * (frame.city == "berlin")
        + rng.normal(0, 1, n)
    )
    return frame, (logit > 0).to_numpy(dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _columns() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), list(COLUMNS_NUMERIC)),
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(COLUMNS_STRING)),
        ]
    )
    model = Pipeline([("prep", prep), ("clf", GradientBoostingClassifier(n_estimators=100, random_state=0))])
    return model.fit(*columns_table())


def columns_rows(n: int) -> pd.DataFrame:
    """The first n rows of the table (a fresh frame)."""
    return columns_table()[0].iloc[:n].reset_index(drop=True)


def _pandas_columns(frame: pd.DataFrame) -> Iterator[tuple[str, str, list[Any]]]:
    """(name, V2 datatype, values) per column, as PandasCodec encodes them."""
    for name in frame.columns:
        column = frame[name]
        yield str(name), _PANDAS_DATATYPES[column.dtype.kind], column.tolist()


def pandas_rest_body(frame: pd.DataFrame) -> bytes:
    """The V2 JSON request `mlserver.codecs.PandasCodec.encode_request(frame)` produces: content type
    "pd", one [N, 1] tensor per column, string columns BYTES with content type "str"."""
    inputs = []
    for name, datatype, values in _pandas_columns(frame):
        tensor: dict[str, Any] = {"name": name, "shape": [len(values), 1], "datatype": datatype}
        if datatype == "BYTES":
            tensor["parameters"] = {"content_type": "str"}
        inputs.append({**tensor, "data": values})
    body = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    return json.dumps(body, separators=(",", ":")).encode()


def pandas_grpc_request(frame: pd.DataFrame) -> Any:
    """The same as a ModelInferRequest (what MLServer's converter makes of that request): typed
    fp64_contents, bytes_contents for strings, the content types as string parameters."""
    tensors = []
    for name, datatype, values in _pandas_columns(frame):
        encoded = [v.encode() for v in values] if datatype == "BYTES" else values
        tensor = pb_tensor(name, [len(values), 1], datatype, encoded)
        if datatype == "BYTES":
            tensor.parameters["content_type"].string_param = "str"
        tensors.append(tensor)
    request = pb_request(MODEL_NAME, tensors)
    request.parameters["content_type"].string_param = "pd"
    return request


BENCH_MODELS = {
    "linear": BenchModel(_linear, bench_rows, rest_body, grpc_request),
    "forest": BenchModel(_forest, bench_rows, rest_body, grpc_request),
    "columns": BenchModel(_columns, columns_rows, pandas_rest_body, pandas_grpc_request),
}


def lookup_rest_body(entity_id: str) -> bytes:
    """The V2 JSON request by id: one BYTES `entity_id` [1] instead of the features."""
    body = {"inputs": [json_tensor("entity_id", np.asarray([entity_id]), datatype="BYTES", flat=True)]}
    return json.dumps(body, separators=(",", ":")).encode()


def lookup_grpc_request(entity_id: str) -> Any:
    """The same as a ModelInferRequest (the id in contents.bytes_contents)."""
    return pb_request(MODEL_NAME, [pb_tensor("entity_id", [1], "BYTES", [entity_id.encode()])])


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message (uncompressed), as sent in the HTTP/2 DATA frames."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# ---------------------------------------------------------------- model dirs for each server


def base_server_settings() -> dict[str, Any]:
    """The project's settings.json minus ports and parallel_workers (what every config shares)."""
    settings = project_settings()
    settings.pop("parallel_workers", None)
    return settings


@dataclass(frozen=True)
class MLServerConfig:
    """parallel_workers: None = MLServer's default (1). batching: adaptive batching on/off."""

    parallel_workers: int | None = None
    batching: bool = False
    max_batch_size: int = 16
    max_batch_time: float = 0.002

    @property
    def label(self) -> str:
        pw = "pw=default" if self.parallel_workers is None else f"pw={self.parallel_workers}"
        return pw + (" +batch" if self.batching else "")

    @property
    def slug(self) -> str:
        pw = "pwdef" if self.parallel_workers is None else f"pw{self.parallel_workers}"
        return pw + ("-ab" if self.batching else "")

    def batching_settings(self) -> dict[str, Any]:
        if not self.batching:
            return {}
        return {"max_batch_size": self.max_batch_size, "max_batch_time": self.max_batch_time}


def prepare_mlserver_dir(
    kind: str,
    workdir: Path,
    cfg: MLServerConfig,
    model: str = "linear",
    shadow: float = 0.0,
    copy: bool = False,
    feature_store: dict[str, Any] | None = None,
    variant: str = "",
    baseline: Baseline | None = None,
) -> Path:
    """A model repository for `mlserver start` with one model `diabetes`.

    kind "ours": harness.repository (runtime/ linked, the project's settings.json, a copy of
    models/diabetes/1, or the other models packaged by pipeline_tools.package, with the batching fields added;
    `feature_store`: the linear model also answers requests by id from that store).
    `variant` names the directory of one more server of the same kind and config.
    `baseline` (kind "ours"): that revision's runtime/ linked and its settings.json instead of the
    working tree's, the model directory the same.
    kind "stock": the same scaler + model dumped as one sklearn Pipeline served by mlserver_sklearn,
    with the same settings minus the project's own code (its JSON log formatter and repository
    class); neither server writes a line per request (debug false).
    """
    tags = ("shadow" if shadow else "", "copy" if copy else "", variant, baseline.slug if baseline else "")
    root = workdir / "-".join([kind, cfg.slug, *filter(None, tags)])
    if root.exists():
        shutil.rmtree(root)
    if kind == "ours" and model == "linear":
        _ours_repository(root, cfg, baseline)
        extra: dict[str, Any] = {"max_rows": 10000}
        if shadow:  # diabetes v2 shadowing this share of the requests
            add_model(root, SHADOW_NAME, source=f"{MODEL_NAME}/2", version="2")
            extra.update(shadow_model=SHADOW_NAME, shadow_sample_rate=shadow)
        if feature_store:
            extra["feature_store"] = feature_store
        add_model(
            root,
            MODEL_NAME,
            source=f"{MODEL_NAME}/{MODEL_VERSION}",
            version=MODEL_VERSION,
            extra=extra,
            settings=cfg.batching_settings(),
        )
    elif kind == "ours":
        from pipeline_tools.package import write_model_dir  # MLServer-free

        _ours_repository(root, cfg, baseline)
        target = write_model_dir(bench_pipeline(model), MODEL_NAME, MODEL_VERSION, root / "models")
        settings_file = target / "model-settings.json"
        settings = json.loads(settings_file.read_text())
        settings_file.write_text(json.dumps({**settings, **cfg.batching_settings()}, indent=2) + "\n")
    elif kind == "stock":
        make_repository(root, workers=cfg.parallel_workers, base=stock_server_settings(), link_runtime=False)
        add_stock_model(root, MODEL_NAME, bench_pipeline(model), cfg)
    else:
        raise ValueError(kind)
    return root


def stock_server_settings() -> dict[str, Any]:
    """The stock runtime's settings.json: the project's minus its own code (the JSON log formatter
    and repository class)."""
    return {k: v for k, v in base_server_settings().items() if "runtime" not in str(v)}


def add_stock_model(root: Path, name: str, fitted: Any, cfg: MLServerConfig) -> Path:
    """root/<name>: the fitted pipeline as one `model.joblib` served by mlserver_sklearn."""
    import joblib

    model_dir = root / name
    model_dir.mkdir()
    joblib.dump(fitted, model_dir / "model.joblib")
    ms = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": MODEL_VERSION},
        **cfg.batching_settings(),
    }
    (model_dir / "model-settings.json").write_text(json.dumps(ms, indent=2) + "\n")
    return model_dir


def _ours_repository(root: Path, cfg: MLServerConfig, baseline: Baseline | None) -> None:
    """An empty repository for this runtime: the working tree's runtime/ and settings.json, or the
    baseline revision's (linked as runtime/, so the server's `import runtime` finds that copy)."""
    if baseline is None:
        make_repository(root, workers=cfg.parallel_workers)
        return
    make_repository(root, workers=cfg.parallel_workers, base=baseline.settings(), link_runtime=False)
    (root / "runtime").symlink_to(baseline.runtime, target_is_directory=True)


def prepare_kserve_dir(workdir: Path, model: str = "linear", fitted: Any = None, tag: str = "") -> Path:
    """KServe's model directory: `fitted` (default: the bench model) as model.joblib."""
    import joblib

    root = workdir / "-".join(filter(None, ("kserve-model", tag)))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    joblib.dump(bench_pipeline(model) if fitted is None else fitted, root / "model.joblib")
    return root


# ---------------------------------------------------------------- the feature store (--lookup)


@dataclass(frozen=True)
class FeatureStore:
    """The throw-away PostgreSQL the lookup servers read: its DSN file and the id every request sends."""

    pg: Postgres
    dsn_file: Path
    entity_id: str

    def settings(self, cache: bool) -> dict[str, Any]:
        """`parameters.extra.feature_store` of a lookup server; without the cache every request
        queries the database (the runtime's other defaults apply: pool of 1-4, TTL 30 s)."""
        settings = {"dsn_file": str(self.dsn_file), "table": FEATURE_TABLE, "lookup_timeout_ms": LOOKUP_TIMEOUT_MS}
        return settings if cache else {**settings, "cache_ttl_s": 0}

    def processes(self) -> list[Any]:
        """The postmaster and its children (one backend per pooled connection, checkpointer, ...):
        the database's CPU, which is outside the runtime's process tree."""
        import psutil

        try:  # the pid file's first line is the postmaster's pid
            root = psutil.Process(int((self.pg.data_dir / "postmaster.pid").read_text().split()[0]))
            return [root, *root.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):  # not running
            return []


@contextlib.contextmanager
def feature_store(log: Callable[[str], None]) -> Iterator[FeatureStore]:
    """A PostgreSQL cluster with the diabetes feature table (ids patient-0000 ..), stopped and
    deleted on the way out, also on errors; the DSN file lives (and goes) with the cluster."""
    from harness.postgres import load_feature_table, start_cluster

    pg = start_cluster(log=log)
    try:
        ids = load_feature_table(pg, FEATURE_TABLE)
        yield FeatureStore(pg, pg.write_dsn_file(pg.base / "dsn"), ids[LOOKUP_ROW])
    finally:
        pg.close()


# ---------------------------------------------------------------- launching servers

Launcher = Callable[[], Server]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {var: os.environ.get(var, "1") for var in _THREAD_VARS}
    env.update(extra or {})
    return env


def mlserver_launcher(
    model_root: Path,
    log_path: Path,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    models: Sequence[str] = (MODEL_NAME,),
) -> Launcher:
    """Launches `mlserver start .` in model_root (or `argv`, e.g. the profiled server); ready once
    `models` are."""
    served = [(name, None) for name in models]
    return lambda: Server.launch(log_path, root=model_root, models=served, env=_env(env), argv=argv)


def kserve_launcher(model_dir: Path, log_path: Path) -> Launcher:
    """Launches bench/kserve_server.py (KServe's ModelServer) on the harness' ports."""
    return _module_launcher("bench.kserve_server", model_dir, log_path, "--enable_latency_logging", "false")


def floor_launcher(model_dir: Path, log_path: Path) -> Launcher:
    """Launches bench/floor_server.py (bare uvicorn + grpc.aio, cached answers) on the harness' ports."""
    return _module_launcher("bench.floor_server", model_dir, log_path)


@contextlib.contextmanager
def serving(launch: Launcher) -> Iterator[Server]:
    """The launched server once ready; stopped (its whole process group) on the way out."""
    server = launch()
    try:
        server.wait_ready(READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- CPU accounting


def cpu_snapshot(server: Server) -> dict[int, float]:
    """CPU seconds (user+system) of the server process and all its descendants, by pid."""
    return processes_cpu(server.processes())


def processes_cpu(processes: list[Any]) -> dict[int, float]:
    """CPU seconds (user+system) of these psutil processes, by pid (the gone ones left out)."""
    import psutil

    out: dict[int, float] = {}
    for p in processes:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _module_launcher(module: str, model_dir: Path, log_path: Path, *extra: str) -> Launcher:
    """A Python module of bench/ serving the model on the harness' ports (their placeholders filled in)."""
    argv = [sys.executable, "-m", module, "--model_dir", str(model_dir), "--model_name", MODEL_NAME]
    argv += ["--http_port", "{http_port}", "--grpc_port", "{grpc_port}", *extra]
    return lambda: Server.launch(
        log_path, root=REPO, models=[(MODEL_NAME, None)], env=_env({"PYTHONPATH": str(REPO)}), argv=argv
    )
