"""bench.run --model columns: the mixed-type pipeline, its PandasCodec requests (compared with what
MLServer's own codec and gRPC converter make of the same rows) and its targets (the measurement
itself is `python -m bench.run --model columns`, never a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from mlserver.codecs import PandasCodec
from mlserver.grpc import dataplane_pb2
from mlserver.grpc.converters import ModelInferRequestConverter

from bench import common, report
from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import read_manifest
from tests.unit.conftest import ROOT


@pytest.mark.parametrize("rows", [1, 100])
def test_the_rest_body_is_what_pandas_codec_encodes(rows):
    frame = common.columns_rows(rows)
    expected = json.loads(PandasCodec.encode_request(frame).model_dump_json(exclude_none=True))
    assert json.loads(common.pandas_rest_body(frame)) == expected
    assert {t["datatype"] for t in expected["inputs"]} == {"FP64", "BYTES"}


def test_the_grpc_request_is_what_mlservers_converter_makes_of_that_request():
    # tritonclient's protos (the bench's) cannot be imported beside mlserver's: built in a child process.
    code = (
        "import sys; from bench import common; "
        "sys.stdout.write(common.pandas_grpc_request(common.columns_rows(3)).SerializeToString().hex())"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    ours = dataplane_pb2.ModelInferRequest.FromString(bytes.fromhex(child.stdout))
    request = PandasCodec.encode_request(common.columns_rows(3))
    assert ours == ModelInferRequestConverter.from_types(request, model_name=common.MODEL_NAME, model_version=None)


def test_the_pipeline_is_deterministic_and_packages_with_numeric_and_string_columns(tmp_path):
    frame, labels = common.columns_table()
    assert 0.2 < labels.mean() < 0.8
    pipeline = common.bench_pipeline("columns")
    assert common.bench_pipeline("columns") is pipeline  # fitted once per process
    rows = common.columns_rows(100)
    assert set(pipeline.predict(rows)) == {0, 1}
    common._columns.cache_clear()
    np.testing.assert_array_equal(common.bench_pipeline("columns").predict_proba(rows), pipeline.predict_proba(rows))
    manifest = read_manifest(write_model_dir(pipeline, common.MODEL_NAME, "1", tmp_path))
    kinds = {column.name: column.kind for column in manifest.columns}
    assert kinds == {
        **dict.fromkeys(common.COLUMNS_NUMERIC, "numeric"),
        **dict.fromkeys(common.COLUMNS_STRING, "string"),
    }


def _run(server: str, config: str, proto: str, load: str, rps: float, errors: int = 0) -> dict:
    return {"server": server, "config": config, "protocol": proto, "load": load, "rps": rps, "errors": errors}


def test_targets_are_ours_over_stocks_best_config_two_x_at_one_row_and_one_and_a_half_x_at_100():
    runs = []
    for proto in ("rest", "grpc"):
        for load in report.LOAD_TITLES:
            runs += [_run("stock", "pw=0", proto, load, 100), _run("stock", "pw=default", proto, load, 50)]
            runs.append(_run("kserve", "kserve workers=1", proto, load, 1000))
    runs += [
        _run("ours", "pw=0", "rest", "1row_c1", 200),  # exactly 2x stock's best: PASS
        _run("ours", "pw=0", "grpc", "1row_c1", 199),
        _run("ours", "pw=0", "rest", "1row_c16", 250),
        _run("ours", "pw=default", "rest", "1row_c16", 900, errors=3),  # errors: not a candidate
        _run("ours", "pw=0", "rest", "100rows_c4", 150),
        _run("ours", "pw=0", "grpc", "100rows_c4", 149),
    ]  # no gRPC 1row_c16 result from ours: no verdict
    targets = report.evaluate_targets({"meta": {"model": "columns"}, "runs": runs})
    verdicts = [(t["target"], t["stock"], round(t["ratio"], 2), t["pass"]) for t in targets]
    assert verdicts == [
        ("REST 1 row, c=1: req/s >= 2x stock", 100, 2.0, True),
        ("gRPC 1 row, c=1: req/s >= 2x stock", 100, 1.99, False),
        ("REST 1 row, c=16: req/s >= 2x stock", 100, 2.5, True),
        ("REST 100 rows, c=4: req/s >= 1.5x stock", 100, 1.5, True),
        ("gRPC 100 rows, c=4: req/s >= 1.5x stock", 100, 1.49, False),
    ]


def test_every_bench_model_has_its_targets():
    assert set(report.MODEL_TARGETS) == set(common.BENCH_MODELS)
