"""Helpers of the integration suite on top of harness/: audited REST and gRPC calls, error
message checks, the kserve clients' worker process and the gRPC metadata probe.

Like the whole suite this never imports mlserver (the protobuf trap): the server is a subprocess
(harness.server.Server) reached only through V2 clients over loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from harness.models import REPO_ROOT
from harness.server import Server
from harness.v2 import REQUEST_TIMEOUT_S, rest_infer_path

DEFAULT_MAX_ROWS = 10_000
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Traceback")


# ------------------------------------------------------------------------------ response checks


class BodyAudit:
    """Checks every response body / status message as it arrives: none may carry a traceback."""

    def check(self, where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if any(m in text for m in TRACEBACK_MARKERS) or 'File "/' in text:
            raise AssertionError(f"response of {where} contains a traceback: {text[:2000]}")


AUDIT = BodyAudit()


def assert_mentions(message: str, fragments: Iterable[Any], where: str = "") -> None:
    """Each fragment must occur in the message; a tuple fragment means 'any of these';
    a callable fragment is a predicate on the message."""
    low = message.lower()
    for frag in fragments:
        if callable(frag):
            if not frag(message):
                raise AssertionError(f"{where} error message fails {frag.__doc__}: {message!r}")
            continue
        options = frag if isinstance(frag, tuple) else (frag,)
        if not any(str(o).lower() in low for o in options):
            raise AssertionError(
                f"{where} error message lacks {' or '.join(repr(str(o)) for o in options)}: {message!r}"
            )


def lists_offered_outputs(*offered: str):
    """Predicate: the message, with its quoted unknown name removed, lists the offered outputs."""

    def check(message: str) -> bool:
        rest = message
        start = rest.find("'")
        end = rest.find("'", start + 1) if start >= 0 else -1
        if end > start >= 0:
            rest = rest[:start] + rest[end + 1 :]
        return all(o in rest for o in offered)

    check.__doc__ = f"to list the offered outputs {offered}"
    return check


# ------------------------------------------------------------------------------ plain REST

_SESSION = requests.Session()


def rest_post(
    server: Server,
    model: str,
    body: Any,
    version: str | None = None,
    raw: bytes | str | None = None,
    headers: dict | None = None,
) -> requests.Response:
    url = server.http_url + rest_infer_path(model, version)
    if raw is not None:
        resp = _SESSION.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
    else:
        resp = _SESSION.post(url, json=body, headers=headers or {}, timeout=REQUEST_TIMEOUT_S)
    AUDIT.check(f"POST {url}", resp.content)
    return resp


def rest_get(server: Server, path: str) -> requests.Response:
    resp = _SESSION.get(f"{server.http_url}{path}", timeout=REQUEST_TIMEOUT_S)
    AUDIT.check(f"GET {path}", resp.content)
    return resp


# ------------------------------------------------------------------------------ raw gRPC

_CHANNELS: dict[str, grpc.Channel] = {}


def grpc_channel(server: Server) -> grpc.Channel:
    ch = _CHANNELS.get(server.grpc_url)
    if ch is None:
        ch = grpc.insecure_channel(
            server.grpc_url,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        _CHANNELS[server.grpc_url] = ch
    return ch


def grpc_stub(server: Server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc_channel(server))


def close_grpc_channels() -> None:
    for ch in _CHANNELS.values():
        ch.close()
    _CHANNELS.clear()


class GrpcOutcome:
    def __init__(self, response=None, code: grpc.StatusCode | None = None, details: str = ""):
        self.response = response
        self.code = code
        self.details = details

    @property
    def ok(self) -> bool:
        return self.code is None


def grpc_call(server: Server, request: service_pb2.ModelInferRequest) -> GrpcOutcome:
    try:
        resp = grpc_stub(server).ModelInfer(request, timeout=REQUEST_TIMEOUT_S)
    except grpc.RpcError as err:
        details = err.details() or ""
        AUDIT.check(f"gRPC ModelInfer {request.model_name}", details)
        return GrpcOutcome(code=err.code(), details=details)
    AUDIT.check(f"gRPC ModelInfer {request.model_name}", str(resp))
    return GrpcOutcome(response=resp)


# ------------------------------------------------------------------------------ kserve clients


class KServeWorker:
    """Talks to kserve_worker.py (its own process: kserve and tritonclient register the same
    protobuf symbols) over pipes; every answer bounded by a timeout."""

    def __init__(self, server: Server, log_path: Path):
        import selectors

        self._stderr = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.kserve_worker", server.http_url, server.grpc_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO_ROOT,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._stdout, selectors.EVENT_READ)
        self.log_path = log_path
        hello = self._read(60.0)
        assert hello.get("ready"), f"kserve worker did not start: {hello}"

    def _read(self, timeout: float) -> dict:
        if not self._sel.select(timeout):
            raise AssertionError(f"kserve worker gave no answer in {timeout:.0f}s")
        line = self._stdout.readline()
        if not line:
            raise AssertionError(
                "kserve worker exited; stderr tail:\n"
                + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
            )
        return json.loads(line)

    def call(self, msg: dict, timeout: float = REQUEST_TIMEOUT_S + 10) -> dict:
        self._stdin.write((json.dumps(msg) + "\n").encode())
        self._stdin.flush()
        answer = self._read(timeout)
        if not answer.get("ok"):
            AUDIT.check(f"kserve {msg.get('transport')} {msg.get('op')}", answer.get("message"))
        return answer

    def infer(
        self, transport: str, model: str, inputs: list[dict], version: str | None = None, outputs: Iterable[str] = ()
    ) -> dict:
        return self.call(
            {
                "op": "infer",
                "transport": transport,
                "model": model,
                "version": version,
                "inputs": inputs,
                "outputs": list(outputs),
            }
        )

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            self._sel.close()
            self._stderr.close()


def kserve_outputs(answer: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


# ------------------------------------------------------------------------------ gRPC metadata
# MLServer's dataplane.proto gives TensorMetadata a `parameters` map (field 4), and the model's
# metadata one (field 6); tritonclient's
# and kserve's copies of the V2 proto lack it, so they silently drop the feature names. This
# decodes the same wire bytes with a private descriptor pool (no global symbols registered).


@cache
def _metadata_message_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="itest_metadata_probe.proto", package="itest_probe", syntax="proto3")

    def add_field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name

    param = fdp.message_type.add(name="InferParameter")
    add_field(param, "bool_param", 1, F.TYPE_BOOL)
    add_field(param, "int64_param", 2, F.TYPE_INT64)
    add_field(param, "string_param", 3, F.TYPE_STRING)
    add_field(param, "double_param", 4, F.TYPE_DOUBLE)
    add_field(param, "uint64_param", 5, F.TYPE_UINT64)

    tensor = fdp.message_type.add(name="TensorMetadata")
    add_field(tensor, "name", 1, F.TYPE_STRING)
    add_field(tensor, "datatype", 2, F.TYPE_STRING)
    add_field(tensor, "shape", 3, F.TYPE_INT64, F.LABEL_REPEATED)
    entry = tensor.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    add_field(entry, "key", 1, F.TYPE_STRING)
    add_field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".itest_probe.InferParameter")
    add_field(tensor, "parameters", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.TensorMetadata.ParametersEntry")

    meta = fdp.message_type.add(name="ModelMetadataResponse")
    add_field(meta, "name", 1, F.TYPE_STRING)
    add_field(meta, "versions", 2, F.TYPE_STRING, F.LABEL_REPEATED)
    add_field(meta, "platform", 3, F.TYPE_STRING)
    add_field(meta, "inputs", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.TensorMetadata")
    add_field(meta, "outputs", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.TensorMetadata")
    meta_entry = meta.nested_type.add(name="ParametersEntry")  # the model's own parameters (classes)
    meta_entry.options.map_entry = True
    add_field(meta_entry, "key", 1, F.TYPE_STRING)
    add_field(meta_entry, "value", 2, F.TYPE_MESSAGE, type_name=".itest_probe.InferParameter")
    add_field(
        meta, "parameters", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.ModelMetadataResponse.ParametersEntry"
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("itest_probe.ModelMetadataResponse"))


def grpc_metadata_with_parameters(server: Server, name: str, version: str = ""):
    call = grpc_channel(server).unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=service_pb2.ModelMetadataRequest.SerializeToString,
        response_deserializer=_metadata_message_class().FromString,
    )
    return call(service_pb2.ModelMetadataRequest(name=name, version=version), timeout=REQUEST_TIMEOUT_S)


def parse_feature_names(value: Any) -> list[str]:
    """feature_names as a JSON list, a JSON-encoded list string, or a comma-joined string."""
    if isinstance(value, list):
        return [str(v) for v in value]
    assert isinstance(value, str), f"feature_names has unexpected type: {value!r}"
    if value.startswith("["):
        return [str(v) for v in json.loads(value)]
    return [v.strip() for v in value.split(",")]


def records(names: Iterable[str], rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows as records, each with its keys in reverse order (the model's order is the server's job):
    the table `/predict` and KServe's V1 take as `instances`."""
    names = list(names)
    return [dict(reversed(list(zip(names, row, strict=True)))) for row in rows.tolist()]


def assert_grpc_refused(outcome: Any, fragments: Iterable[Any], where: str) -> None:
    """A gRPC call refused as a bad input (INVALID_ARGUMENT), its details naming each fragment."""
    got = outcome.code.name if outcome.code else "OK"
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{where}: expected INVALID_ARGUMENT, got {got}: {outcome.details[:500]}"
    )
    assert_mentions(outcome.details, fragments, where)
