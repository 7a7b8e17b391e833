"""What each model version's load leaves behind: its metric series exist from the load (at 0, each
exactly once on /metrics) but are bound to prometheus_client children at their first use, in
process; with parallel workers every series is bound at load, so the workers' files show them;
the load's cyclic garbage is collected before the loaded objects are frozen; and copies of one
version, configured alike, share what is a function of their content and settings."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import weakref
from collections import Counter as Tally

import numpy as np
from prometheus_client import REGISTRY, generate_latest

from harness.models import REPO_ROOT
from runtime.core.options import RuntimeOptions
from runtime.observation.metrics import STAGES, ModelMetrics, _families, known_outcomes
from runtime.service.loaded import Loaded
from runtime.service.service import ModelService, _freeze_loaded

_names = itertools.count()
FEATURES = ("a", "b")
EDGES = np.array([1.0, 2.0])


def _model() -> tuple[str, ModelMetrics]:
    model = f"series-{next(_names)}"
    metrics = ModelMetrics(model, "1", FEATURES)
    metrics.bind_predictions(EDGES, None)
    return model, metrics


def _sample(name: str, model: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": model, "version": "1", **labels})


def _bound(model: str) -> set[str]:
    """The families that hold a child of `model`: what was bound, not declared."""
    families = vars(_families()).values()
    return {
        declared.family._name
        for declared in families
        if hasattr(declared, "family")
        for metric in declared.family.collect()
        for s in metric.samples
        if s.labels.get("model") == model
    }


def _exported(model: str) -> Tally[tuple[str, str]]:
    """Each exported sample of `model`, with how often it appears on /metrics."""
    lines = [line for line in generate_latest(REGISTRY).decode().splitlines() if f'model="{model}"' in line]
    return Tally((line.split("{")[0], line.split("{")[1].split("}")[0]) for line in lines)


def test_every_series_shows_zero_from_load_with_no_child_bound():
    model, _ = _model()
    for outcome in known_outcomes():
        assert _sample("pipeline_requests_total", model, outcome=outcome) == 0, outcome
    for stage in STAGES:
        assert _sample("pipeline_stage_seconds_count", model, stage=stage) == 0, stage
        assert _sample("pipeline_stage_seconds_bucket", model, stage=stage, le="+Inf") == 0, stage
    assert _sample("pipeline_request_rows_sum", model) == 0
    for feature in FEATURES:
        assert _sample("pipeline_ood_values_total", model, feature=feature) == 0
    for bucket in ("1", "2", "+Inf"):
        assert _sample("pipeline_prediction_bucket_total", model, bucket=bucket) == 0
    assert _sample("pipeline_requests_created", model, outcome="ok") is not None
    assert _bound(model) == set()
    assert max(_exported(model).values()) == 1


def test_a_series_is_bound_at_first_use_with_its_labels_and_values_and_shown_once():
    model, metrics = _model()
    metrics.record("ok", 3, {"decode": 0.001, "predict": 0.002})
    metrics.record("ok", 1, {"decode": 0.001})
    metrics.record_predictions(np.array([0.5, 1.5, 1.7, 9.0]))
    assert _bound(model) == {
        "pipeline_requests",
        "pipeline_request_rows",
        "pipeline_stage_seconds",
        "pipeline_prediction_bucket",
    }
    assert _sample("pipeline_requests_total", model, outcome="ok") == 2
    assert _sample("pipeline_requests_total", model, outcome="feature_count") == 0  # still declared
    assert _sample("pipeline_request_rows_sum", model) == 4
    assert _sample("pipeline_request_rows_bucket", model, le="2.0") == 1
    assert _sample("pipeline_stage_seconds_count", model, stage="decode") == 2
    assert _sample("pipeline_stage_seconds_count", model, stage="predict") == 1
    assert _sample("pipeline_stage_seconds_count", model, stage="encode") == 0
    counted = {b: _sample("pipeline_prediction_bucket_total", model, bucket=b) for b in ("1", "2", "+Inf")}
    assert counted == {"1": 1, "2": 2, "+Inf": 1}
    assert max(_exported(model).values()) == 1


def test_a_gauge_set_at_load_shows_its_value(models_dir):
    model, metrics = _model()
    from runtime.core.artifacts import read_manifest

    manifest = read_manifest(models_dir / "diabetes" / "1")
    metrics.loaded(manifest, "folded-linear", 0.25)
    info = {"predictor": "folded-linear", "model_sha256": manifest.model.sha256}
    assert _sample("pipeline_model_info", model, **info, scaler_sha256=manifest.scaler.sha256) == 1  # type: ignore[union-attr]
    assert _sample("pipeline_model_load_seconds", model) == 0.25
    assert max(_exported(model).values()) == 1


def test_with_parallel_workers_every_series_is_bound_at_load(tmp_path):
    """A worker's values live in its multiprocess files, which /metrics reads instead of the
    registry: each series is there from the load."""
    code = textwrap.dedent("""
        import json
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from runtime.observation.metrics import ModelMetrics

        ModelMetrics("m", "1", ("a", "b")).bind_predictions(None, ["x", "y"])
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        samples = [s for m in registry.collect() for s in m.samples if s.labels.get("model") == "m"]
        varying = ("outcome", "feature", "bucket")
        print(json.dumps([[s.name, next((s.labels[k] for k in varying if k in s.labels), "")] for s in samples]))
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    series = {tuple(s) for s in json.loads(done.stdout)}
    assert {("pipeline_requests_total", o) for o in known_outcomes()} <= series
    assert {("pipeline_ood_values_total", "a"), ("pipeline_ood_values_total", "b")} <= series
    assert {("pipeline_prediction_bucket_total", "x"), ("pipeline_prediction_bucket_total", "y")} <= series


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_loads_cyclic_garbage_is_collected_before_the_rest_is_frozen():
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage
    _freeze_loaded()
    assert gone() is None
    assert gc.get_freeze_count() > 0


def test_models_configured_alike_share_their_options():
    first = RuntimeOptions.from_extra({"max_rows": 7, "ood_z_threshold": 3.0})
    assert RuntimeOptions.from_extra({"ood_z_threshold": 3.0, "max_rows": 7}) is first
    assert RuntimeOptions.from_extra({"max_rows": 8}).max_rows == 8


def test_copies_of_one_version_share_their_predictor_buckets_and_options(models_dir, tmp_path):
    """What is a function of the verified content and the settings is made once for all the copies:
    the checked predictor with its predictions' deciles (the regressor's buckets), the options."""
    services = []
    for i in range(5):
        copy = tmp_path / f"copy-{i}"
        shutil.copytree(models_dir / "diabetes" / "1", copy)
        options = RuntimeOptions.from_extra({"max_rows": 100})
        services.append(asyncio.run(ModelService.load(f"copy-{i}", copy, options, loaded=Loaded())))
    first = services[0]
    assert first._predictor.deciles is not None and len(first._predictor.deciles) == 9
    for service in services[1:]:
        assert service._predictor is first._predictor and service.options is first.options
        assert service._observer.metrics._edges is first._predictor.deciles
    assert _sample("pipeline_prediction_bucket_total", "copy-4", bucket="+Inf") == 0
