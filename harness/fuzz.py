"""Send fuzz cases (harness.strategies) to a live server and judge the answers.

Shared by tests/fuzz/test_fuzz.py and `python -m bench.fuzz`. Client side only: requests and
tritonclient's generated gRPC stubs; never mlserver (the protobuf trap). The server is
harness.server.Server (`mlserver start .` on free loopback ports).

What a server may answer (decided from the runtime's contract, CONTEXT "The V2 contract"):

REST   200, or a 4xx whose body is a JSON object with a non-empty "error" (MLServer and the runtime)
       or "detail" (FastAPI's request validation, 422). 404 only for a model/version that is not
       served. Never a 5xx.
gRPC   OK, INVALID_ARGUMENT (the contract's code for every bad input) or NOT_FOUND (only for a
       model/version that is not served), each error with a non-empty details string. Nothing
       else: INTERNAL/UNKNOWN are server errors, UNAVAILABLE/DEADLINE_EXCEEDED mean a crash or a
       hang, and FAILED_PRECONDITION is what MLServer maps its 422-status errors to (an invalid
       model URI, a server-side condition), never a property of an inference request, so a request
       that produces it is mis-classified. RESOURCE_EXHAUSTED cannot occur: every case is far
       below gRPC's 4 MB default message limit.
Both   no error text may carry a traceback; OK cases must answer with the pipeline's predictions,
       REJECT cases must be refused (see strategies.py); after any case the server stays ready.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from harness import mixed_model
from harness import strategies as S
from harness.models import MODELS_DIR, pipeline, served_models
from harness.repository import link_model, make_repository
from harness.server import Server
from harness.v2 import good_grpc_request_works, good_rest_request_works, pb_outputs

REQUEST_TIMEOUT_S = 10.0  # each case is tiny; on loopback an answer takes milliseconds
HEALTH_EVERY = 250  # examples between two health checks (per protocol)
CI_EXAMPLES = 2000
ALLOWED_GRPC = {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')

# ---- hypothesis profiles --------------------------------------------------------------------

_COMMON: dict[str, Any] = dict(
    database=None,  # no .hypothesis/examples in the repository
    deadline=None,  # a request's latency is not a property under test
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    print_blob=False,
)
settings.register_profile("fuzz-ci", max_examples=CI_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("fuzz-bench", max_examples=10_000, derandomize=False, **_COMMON)


def use_private_hypothesis_dir(directory: Path) -> None:
    """Hypothesis caches unicode tables under ./.hypothesis: keep them out of the repository."""
    from hypothesis import configuration

    directory.mkdir(parents=True, exist_ok=True)
    configuration.set_hypothesis_home_dir(directory)


# ---- the server ----------------------------------------------------------------------------


def fuzz_repository(root: Path) -> list[tuple[str, str | None]]:
    """A repository at `root` serving what the project serves (the shipped models linked, the
    unversioned alias beside its versions) plus a model with string columns (harness.mixed_model, packaged here); the
    (name, version) pairs the server must report ready."""
    make_repository(root)
    for model in sorted(p.name for p in MODELS_DIR.iterdir() if p.is_dir()):
        link_model(root, model)
    mixed_model.write(root / "models")
    return [*served_models(), (mixed_model.NAME, S.MIXED_VERSION)]


def start_fuzz_server(root: Path) -> Server:
    models = fuzz_repository(root)
    return Server.start(root / "mlserver.log", root=root, models=models)


# ---- outcomes -------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # "200", "422", ... or a gRPC code name ("OK", "INVALID_ARGUMENT", ...)
    message: str = ""  # the error text (REST body's error/detail, gRPC details)
    text: str = ""  # REST: the whole body
    json: Any = None  # REST: the parsed body
    response: Any = None  # gRPC: the ModelInferResponse
    seconds: float = 0.0


class ServerDown(AssertionError):
    pass


class Client:
    """One keep-alive HTTP session and one gRPC channel to a server."""

    def __init__(self, http_url: str, grpc_target: str) -> None:
        self.http_url = http_url
        self.session = requests.Session()
        self.channel = grpc.insecure_channel(
            grpc_target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.session.close()
        self.channel.close()

    def rest(self, path: str, body: bytes, content_type: str | None, more: dict[str, str] | None = None) -> Outcome:
        headers = ({"Content-Type": content_type} if content_type else {}) | (more or {})
        started = time.perf_counter()
        resp = None
        for attempt in (1, 2):
            try:
                resp = self.session.post(self.http_url + path, data=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
                break
            except requests.ConnectionError as exc:
                # Closed without an answer. A keep-alive connection the server dropped after an
                # earlier answer fails the same way, so retry once on a fresh connection: only a
                # request that is dropped twice is this request's fault (if the server still
                # answers health checks; otherwise the server is down).
                self._reset_session()
                if not self._http_alive():
                    raise ServerDown(f"REST request failed: {type(exc).__name__}: {exc}") from None
                if attempt == 2:
                    return Outcome(
                        "DISCONNECTED", f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
                    )
            except requests.RequestException as exc:
                raise ServerDown(f"REST request failed: {type(exc).__name__}: {exc}") from None
        assert resp is not None
        elapsed = time.perf_counter() - started
        if resp.status_code >= 500:
            self._reset_session()  # uvicorn may close the connection after a server error
        text = resp.text
        try:
            parsed = resp.json()
        except ValueError:
            parsed = None
        message = ""
        if isinstance(parsed, dict) and resp.status_code >= 400:
            value = parsed.get("error") or parsed.get("detail")
            message = value if isinstance(value, str) else (json.dumps(value) if value else "")
        return Outcome(str(resp.status_code), message, text, parsed, seconds=elapsed)

    def _reset_session(self) -> None:
        self.session.close()
        self.session = requests.Session()

    def _http_alive(self) -> bool:
        try:
            return self.session.get(f"{self.http_url}/v2/health/live", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def grpc(self, request: Any) -> Outcome:
        started = time.perf_counter()
        try:
            resp = self.stub.ModelInfer(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServerDown(f"gRPC {code.name}: {err.details()}") from None
            return Outcome(code.name, err.details() or "", seconds=time.perf_counter() - started)
        return Outcome("OK", response=resp, seconds=time.perf_counter() - started)

    def send(self, case: S.AnyCase) -> Outcome:
        if isinstance(case, S.RestCase):
            return self.rest(case.url_path(), case.body, case.content_type, case.headers)
        return self.grpc(case.request)


# ---- judging one answer ---------------------------------------------------------------------


def _fail(case: S.AnyCase, outcome: Outcome, why: str) -> NoReturn:
    detail = outcome.message or outcome.text
    raise AssertionError(f"{why}\n  answer: {outcome.status} {detail[:1500]!r}\n  request: {case.describe()}")


def _check_no_traceback(case: S.AnyCase, outcome: Outcome, text: str) -> None:
    sent = case.body.decode("utf-8", "replace") if isinstance(case, S.RestCase) else str(case.request)
    for marker in TRACEBACK_MARKERS:
        if marker in text and marker not in sent:
            _fail(case, outcome, f"the answer carries a traceback ({marker!r})")


def _decode_rest_outputs(case: S.AnyCase, outcome: Outcome) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    body = outcome.json
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list):
        _fail(case, outcome, "200 without an outputs list")
    arrays: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for o in body["outputs"]:
        data = np.array(o["data"], dtype=object).ravel()
        values = np.array([np.nan if v is None else v for v in data], dtype=np.float64)
        shape = [int(d) for d in o["shape"]]
        if int(np.prod(shape)) != values.size:
            _fail(case, outcome, f"output {o['name']!r}: shape {shape} vs {values.size} values")
        arrays[o["name"]] = values.reshape(shape)
        datatypes[o["name"]] = o["datatype"]
    return arrays, datatypes


def _decode_grpc_outputs(case: S.AnyCase, outcome: Outcome) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    resp = outcome.response
    try:
        arrays = pb_outputs(resp)
    except (ValueError, TypeError, KeyError) as exc:
        _fail(case, outcome, f"undecodable ModelInferResponse: {exc}")
    return ({k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, {o.name: o.datatype for o in resp.outputs})


def _check_success(case: S.AnyCase, outcome: Outcome, stats: Stats) -> None:
    target = case.target
    if not target.served:
        _fail(case, outcome, "success for a model/version that is not served")
    if case.answers is not None:
        _check_answers(case, outcome, case.answers)
        return
    spec = target.spec
    if spec is None:
        _fail(case, outcome, "success for a model without an oracle")
    if isinstance(case, S.RestCase):
        arrays, datatypes = _decode_rest_outputs(case, outcome)
        name, version = outcome.json.get("model_name"), outcome.json.get("model_version")
    else:
        arrays, datatypes = _decode_grpc_outputs(case, outcome)
        name, version = outcome.response.model_name, outcome.response.model_version
    if name != target.model or version != target.resolved_version:
        _fail(
            case,
            outcome,
            f"answered as {name!r} version {version!r}, expected {target.model!r} version {target.resolved_version!r}",
        )
    if not arrays or not set(arrays) <= set(spec.outputs):
        _fail(case, outcome, f"outputs {sorted(arrays)} not within {spec.outputs}")
    rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
    if len(rows) != 1:
        _fail(case, outcome, f"outputs disagree on the row count: {rows}")
    for out_name, arr in arrays.items():
        want_dtype = "INT64" if (out_name == "predict" and spec.kind == "classifier") else "FP64"
        multiclass = len(pipeline(target.model, target.resolved_version).manifest.classes or []) > 2
        want_ndim = 2 if out_name == "predict_proba" or (out_name == "decision_function" and multiclass) else 1
        if datatypes[out_name] != want_dtype or arr.ndim != want_ndim:
            _fail(
                case,
                outcome,
                f"output {out_name!r}: {datatypes[out_name]} {list(arr.shape)}, "
                f"expected {want_dtype} with {want_ndim} dimension(s)",
            )
        if not np.isfinite(arr).all():
            stats.finding(
                "non-finite-output",
                case,
                outcome,
                "200/OK with a non-finite prediction for finite inputs (REST writes null, gRPC NaN/Inf)",
            )
    if case.expect == S.OK:
        _check_predictions(case, outcome, arrays)
        if case.flags:  # parameters.ood_flags=true: one JSON string of per-row flags comes back
            if isinstance(case, S.RestCase):
                flags = (outcome.json.get("parameters") or {}).get("ood_flags")
            else:
                p = outcome.response.parameters
                flags = p["ood_flags"].string_param if "ood_flags" in p else None
            try:
                per_row = json.loads(flags) if isinstance(flags, str) else None
            except ValueError:
                per_row = None
            assert case.x is not None  # an OK case carries the matrix the server predicts on
            if not isinstance(per_row, list) or len(per_row) != len(case.x):
                _fail(case, outcome, f"ood_flags asked for, got {flags!r}")


ANSWER_RTOL, ANSWER_ATOL = 1e-9, 1e-12  # a pipeline-form model answers with scikit-learn itself
LABEL_MARGIN = 1e-9  # a label whose decision is this close to 0 may go either way


def _answered(case: S.AnyCase, outcome: Outcome) -> dict[str, np.ndarray]:
    """The outputs of a 200/OK: V2's outputs, or /predict's predictions and probabilities."""
    if isinstance(case, S.RestCase) and case.path is not None:
        body = outcome.json if isinstance(outcome.json, dict) else {}
        try:
            return {
                "predict": np.asarray(body["predictions"], dtype=np.float64),
                "predict_proba": np.asarray(body["probabilities"], dtype=np.float64),
            }
        except (KeyError, TypeError, ValueError) as exc:
            _fail(case, outcome, f"/predict answered without numeric predictions and probabilities ({exc})")
    if isinstance(case, S.RestCase):
        arrays = _decode_rest_outputs(case, outcome)[0]
        name, version = outcome.json.get("model_name"), outcome.json.get("model_version")
    else:
        arrays = _decode_grpc_outputs(case, outcome)[0]
        name, version = outcome.response.model_name, outcome.response.model_version
    if (name, version) != (case.target.model, case.target.resolved_version):
        _fail(case, outcome, f"answered as {name!r} version {version!r}")
    return arrays


def _check_answers(case: S.AnyCase, outcome: Outcome, answers: dict[str, np.ndarray]) -> None:
    """The answer equals the pipeline's own on the rows the request holds (labels where they are clear)."""
    got = _answered(case, outcome)
    if set(got) != set(case.outputs):
        _fail(case, outcome, f"outputs {sorted(got)}, expected {sorted(case.outputs)}")
    clear = np.abs(answers["decision_function"]) > LABEL_MARGIN
    for name in case.outputs:
        want = answers[name].astype(np.float64)
        if got[name].shape != want.shape:
            _fail(case, outcome, f"{name}: shape {list(got[name].shape)}, the pipeline's {list(want.shape)}")
        if name == "predict":
            same = np.array_equal(got[name][clear], want[clear])
        else:
            same = np.allclose(got[name], want, rtol=ANSWER_RTOL, atol=ANSWER_ATOL)
        if not same:
            _fail(case, outcome, f"{name} {got[name].tolist()} != the pipeline's {want.tolist()}")


def _check_predictions(case: S.AnyCase, outcome: Outcome, arrays: dict[str, np.ndarray]) -> None:
    """The answer equals the pipeline on the matrix the request encodes (float64)."""
    if set(arrays) != set(case.outputs):
        _fail(case, outcome, f"outputs {sorted(arrays)}, expected {sorted(case.outputs)}")
    p = pipeline(case.target.model, case.target.resolved_version)
    x = np.asarray(case.x, dtype=np.float64)
    z = p.scaled(x)
    coef = np.atleast_2d(np.asarray(p.model.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(p.model.intercept_, dtype=np.float64))
    # Folding the scaler into the coefficients changes rounding: tolerance scales with the terms.
    magnitude = (np.abs(z) @ np.abs(coef).T).max(axis=1) + np.abs(intercept).max()
    tol = 1e-9 * magnitude + 1e-12
    if "predict" in arrays:
        got = arrays["predict"]
        if got.shape != (len(x),):
            _fail(case, outcome, f"predict shape {list(got.shape)}, expected [{len(x)}]")
        if p.is_classifier:
            decision = (z @ coef.T + intercept)[:, 0]
            clear = np.abs(decision) > tol
            want = p.predict(x)
            if not np.array_equal(got[clear], want[clear]):
                _fail(case, outcome, f"predict {got.tolist()} != pipeline {want.tolist()}")
        else:
            want = p.predict(x)
            if not (np.abs(got - want) <= tol + 1e-9 * np.abs(want)).all():
                _fail(case, outcome, f"predict {got.tolist()} != pipeline {want.tolist()}")
    for name in ("predict_proba", "decision_function"):
        if name in arrays:
            got, want = arrays[name], p.output(name, x)
            close = np.abs(got - want) <= (tol[:, None] if want.ndim == 2 else tol)
            if got.shape != want.shape or not close.all():
                _fail(case, outcome, f"{name} {got.tolist()} != pipeline {want.tolist()}")


def judge(case: S.AnyCase, outcome: Outcome, stats: Stats) -> str:
    """Raise AssertionError if the answer breaks the contract; return its class for the tally."""
    rest = isinstance(case, S.RestCase)
    if rest:
        if outcome.status == "DISCONNECTED":
            _fail(case, outcome, "the server closed the connection without an answer")
        code = int(outcome.status)
        if code >= 500:
            _fail(case, outcome, f"server error {code}")
        success, error = code == 200, 400 <= code < 500
        if not (success or error):
            _fail(case, outcome, f"unexpected status {code}")
        if code == 404 and case.target.served:
            _fail(case, outcome, "404 for a served model/version")
    else:
        if outcome.status not in ALLOWED_GRPC:
            _fail(case, outcome, f"gRPC status {outcome.status} (allowed: {sorted(ALLOWED_GRPC)})")
        success, error = outcome.status == "OK", outcome.status != "OK"
        if outcome.status == "NOT_FOUND" and case.target.served:
            _fail(case, outcome, "NOT_FOUND for a served model/version")
    if error:
        if not outcome.message.strip():
            _fail(case, outcome, "an error without a message")
        _check_no_traceback(case, outcome, outcome.message if not rest else outcome.text)
        if case.expect == S.OK:
            _fail(case, outcome, "a valid request was refused")
        if case.message and case.message not in outcome.message:
            _fail(case, outcome, f"refused, but not with the contract's message {case.message!r}")
    else:
        if rest:
            _check_no_traceback(case, outcome, outcome.text)
        if case.expect == S.REJECT:
            _fail(case, outcome, "an invalid request was accepted")
        _check_success(case, outcome, stats)
    return outcome.status


# ---- a fuzz session: server, client, tally, periodic health ---------------------------------


@dataclass
class Stats:
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (protocol, expect, status) -> n
    findings: Counter[str] = field(default_factory=Counter)
    finding_examples: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (summary, a case)
    health_checks: int = 0
    health_failures: list[str] = field(default_factory=list)
    examples: Counter[str] = field(default_factory=Counter)  # protocol -> n
    # protocol -> seconds waiting for answers
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def finding(self, fid: str, case: S.AnyCase, outcome: Outcome, summary: str) -> None:
        self.findings[fid] += 1
        self.finding_examples.setdefault(fid, (summary, case.describe()))

    def table(self) -> str:
        lines = [f"{'protocol':8} {'expect':7} {'answer':44} {'count':>7}"]
        for (proto, expect, status), n in sorted(self.outcomes.items()):
            lines.append(f"{proto:8} {expect:7} {status:44} {n:>7}")
        for proto, n in sorted(self.examples.items()):
            lines.append(f"{proto}: {n} examples, {self.seconds[proto]:.1f}s waiting for answers")
        lines.append(f"health checks: {self.health_checks}, failures: {len(self.health_failures)}")
        for fid, n in self.findings.items():
            summary, example = self.finding_examples[fid]
            lines.append(f"finding {fid} ({summary}): {n}x, e.g. {example[:600]}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "examples": dict(self.examples),
            "seconds_waiting": {k: round(v, 2) for k, v in self.seconds.items()},
            "outcomes": [
                {"protocol": p, "expect": e, "answer": s, "count": n} for (p, e, s), n in sorted(self.outcomes.items())
            ],
            "findings": {
                k: {"count": n, "summary": self.finding_examples[k][0], "example": self.finding_examples[k][1]}
                for k, n in self.findings.items()
            },
            "health_checks": self.health_checks,
            "health_failures": self.health_failures,
        }


class FuzzSession:
    def __init__(self, server: Server, health_every: int = HEALTH_EVERY) -> None:
        self.server = server
        self.client = Client(server.http_url, server.grpc_url)
        self.stats = Stats()
        self.health_every = health_every
        self.recent: deque[S.AnyCase] = deque(maxlen=5)

    def close(self) -> None:
        self.client.close()

    def fuzz(self, protocol: str, strategy: st.SearchStrategy[Any], examples: int) -> Stats:
        """`examples` cases drawn from `strategy` (the fuzz-ci profile), each sent and judged, then a
        health check; AssertionError on a violation, a failed health check or a short run."""

        @settings(settings.get_profile("fuzz-ci"), max_examples=examples)
        @given(case=strategy)
        def prop(case: S.AnyCase) -> None:
            self.run(case)

        prop()
        self.health(f"after the {protocol} fuzz")
        assert self.stats.health_checks >= 1
        assert not self.stats.health_failures, "\n".join(self.stats.health_failures)
        # Every example really reached the server (hypothesis may stop early only on a failure).
        assert self.stats.examples[protocol] >= examples, dict(self.stats.examples)
        return self.stats

    def run(self, case: S.AnyCase) -> None:
        """Send one case and judge the answer (raises AssertionError on a violation)."""
        self.recent.append(case)
        try:
            outcome = self.client.send(case)
        except ServerDown as exc:
            alive = self.server.proc.poll() is None
            history = "\n".join(f"  - {c.describe()[:2000]}" for c in self.recent)
            raise AssertionError(
                f"{exc}; server process {'alive' if alive else 'EXITED'}; the culprit is likely "
                f"one of the last requests (newest last):\n{history}\nlog tail:\n"
                f"{self.server.log_tail(40)}"
            ) from None
        self.stats.examples[case.protocol] += 1
        self.stats.seconds[case.protocol] += outcome.seconds
        status = judge(case, outcome, self.stats)
        self.stats.outcomes[(case.protocol, case.expect, status)] += 1
        if self.stats.examples[case.protocol] % self.health_every == 0:
            self.health(f"after {self.stats.examples[case.protocol]} {case.protocol} examples")

    def health(self, when: str) -> None:
        """Ready on both protocols and a known-good request answered correctly on both.

        A second attempt after 0.5 s absorbs a keep-alive connection the server closed while idle;
        a server that fails twice is recorded (and fails test_server_stayed_healthy_throughout).
        """
        self.stats.health_checks += 1
        problem = ""
        for attempt in (1, 2):
            try:
                assert self.server.proc.poll() is None, "server process exited"
                resp = self.client.session.get(f"{self.server.http_url}/v2/health/ready", timeout=10)
                assert resp.status_code == 200, f"/v2/health/ready: {resp.status_code}"
                ready = self.client.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10)
                assert ready.ready, "gRPC ServerReady false"
                good_rest_request_works(self.server.http_url, self.client.session)
                good_grpc_request_works(self.client.stub)
                return
            except (AssertionError, requests.RequestException, grpc.RpcError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if attempt == 1:
                    self.client._reset_session()
                    time.sleep(0.5)
        self.stats.health_failures.append(f"{when}: {problem}"[:2000])
