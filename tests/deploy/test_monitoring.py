"""deploy/monitoring: the PrometheusRule, its promtool unit tests and the Grafana dashboard.

- `promtool check rules` and `promtool test rules` (the distribution's `prometheus` package,
  installed with apt-get when promtool is missing) on rules.yaml, which must be exactly what
  extract_rules.py makes of the PrometheusRule's spec; each alert is mutated to never fire and to
  always fire, and the promtool tests must catch both.
- The dashboard's PromQL is checked by promtool too (as recording rules, Grafana's variables
  substituted).
- Every metric name, label name and label value that a rule, a dashboard query, a legend, an
  annotation or a promtool test series uses must be exported by a REAL server: one started here
  (harness.server, `mlserver start .` as a subprocess) with models configured to have a shadow, a
  fallback and a breaker, auth, a rate limit, a deadline and a feature store, sent REST and gRPC
  requests so that lazily created series exist, then scraped.

  The feature store needs no PostgreSQL for this: its metric children are bound when the model loads,
  and a lookup against a closed port creates the error series. Names that a server declares (HELP/TYPE)
  but has no sample of expand by type (counter: _total/_created; histogram: _bucket/_sum/_count/_created;
  summary: _sum/_count/_created).

Nothing here imports mlserver (the server is a subprocess); tritonclient's protos are used in-process.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml

from tests.deploy.deploy_support import REPO

MONITORING = REPO / "deploy" / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheus-rule.yaml"
RULES = MONITORING / "rules.yaml"
RULES_TEST = MONITORING / "rules_test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# What the issue asks the rules to cover (alert names of prometheus-rule.yaml).
REQUIRED_ALERTS = {
    "PipelineModelErrorRatioHigh",  # 5xx share per model
    "PipelineInferenceLatencyP99High",  # p99
    "PipelineModelStageLatencyP99High",
    "PipelineOutOfDistributionRateHigh",  # OOD rate
    "PipelineModelCircuitBreakerOpen",  # model breaker
    "PipelineFeatureStoreCircuitBreakerOpen",  # feature store breaker
    "PipelineShadowPSIHigh",  # shadow divergence
    "PipelineShadowKSHigh",
    "PipelineRequestsStuckInFlight",  # "drain stuck": the runtime exports no drain metric
}
SEVERITIES = {"warning", "critical"}

# Labels Prometheus attaches to every scraped series (not the runtime's).
TARGET_LABELS = {"job", "instance"}
# Label values the server creates only on events this test does not provoke, from the code:
# runtime.policy.admission refuses with errors.Overloaded (reason "overloaded") when max_in_flight is full.
LAZY_LABEL_VALUES = {
    ("pipeline_admission_refusals_total", "reason"): {"overloaded"},
}

NO_PROMTOOL_ENV = "PIPELINE_TESTS_WITHOUT_PROMTOOL"
APT_INSTALL_TIMEOUT_S = 900
APT_UPDATE_TIMEOUT_S = 300
PROMTOOL_TIMEOUT_S = 60


# ====================================================================== promtool


@cache
def _find_or_install_promtool() -> tuple[str | None, str]:
    """(path, log) of promtool, installing the distribution's `prometheus` package if it is missing.

    Debian's package may also try to start a Prometheus service; nothing here uses it."""
    found = shutil.which("promtool") or (Path("/usr/bin/promtool").is_file() and "/usr/bin/promtool") or None
    if found:
        return found, ""
    if os.environ.get(NO_PROMTOOL_ENV) == "1":
        return None, f"{NO_PROMTOOL_ENV}=1"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    log = []

    def run(argv: list[str], timeout: float) -> int:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"$ {' '.join(argv)}\n{exc}")
            return -1
        log.append(f"$ {' '.join(argv)} -> {done.returncode}\n{(done.stdout + done.stderr)[-3000:]}")
        return done.returncode

    if run(install, APT_INSTALL_TIMEOUT_S) != 0:  # stale or missing package lists: update once
        run([*prefix, "apt-get", "update", "-qq"], APT_UPDATE_TIMEOUT_S)
        run(install, APT_INSTALL_TIMEOUT_S)
    found = shutil.which("promtool") or (Path("/usr/bin/promtool").is_file() and "/usr/bin/promtool") or None
    return found, "\n".join(log)


@pytest.fixture(scope="module")
def promtool() -> str:
    path, log = _find_or_install_promtool()
    if path is None:
        if os.environ.get(NO_PROMTOOL_ENV) == "1":
            pytest.skip(f"{NO_PROMTOOL_ENV}=1 and promtool is not installed")
        pytest.fail(
            "promtool is missing and installing the distribution's `prometheus` package failed "
            f"(needs root or passwordless sudo, and apt); set {NO_PROMTOOL_ENV}=1 to skip:\n{log}",
            pytrace=False,
        )
    return path


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, cwd=cwd)


# ====================================================================== the rules: one source


def _extract_rules_module() -> Any:
    spec = importlib.util.spec_from_file_location("extract_rules", MONITORING / "extract_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prometheus_rule() -> dict[str, Any]:
    return _extract_rules_module().load_rule(PROMETHEUS_RULE)


@pytest.fixture(scope="module")
def alerts(prometheus_rule) -> list[dict[str, Any]]:
    return [rule for group in prometheus_rule["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def write_rule_files(directory: Path, spec: dict[str, Any]) -> Path:
    """rules.yaml (the given spec, rendered as extract_rules.py renders it) and rules_test.yaml in
    `directory`, for promtool."""
    module = _extract_rules_module()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(module.render({"spec": spec}))
    shutil.copyfile(RULES_TEST, directory / "rules_test.yaml")
    return directory


def test_the_prometheus_rule_is_well_formed_and_covers_the_issue(prometheus_rule, alerts):
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", prometheus_rule["metadata"]["name"])
    assert set(prometheus_rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(prometheus_rule["spec"]) == {"groups"}
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert REQUIRED_ALERTS <= set(names), f"missing alerts: {REQUIRED_ALERTS - set(names)}"
    for alert in alerts:
        where = alert["alert"]
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, where
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), f"{where}: needs a `for`"
        assert alert["labels"].get("severity") in SEVERITIES, where
        assert {"summary", "description"} <= set(alert["annotations"]), where


def test_rules_yaml_is_generated_from_the_prometheus_rule(prometheus_rule):
    module = _extract_rules_module()
    assert RULES.read_text() == module.render(prometheus_rule), (
        "deploy/monitoring/rules.yaml is not what the PrometheusRule's spec renders to: "
        "edit prometheus-rule.yaml only, then run `python deploy/monitoring/extract_rules.py`"
    )


def test_promtool_check_rules(promtool, prometheus_rule, tmp_path):
    rules = write_rule_files(tmp_path, prometheus_rule["spec"]) / "rules.yaml"
    out = run_promtool(promtool, "check", "rules", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in prometheus_rule['spec']['groups'])} rules found" in out.stdout


def test_promtool_test_rules(promtool, prometheus_rule, tmp_path):
    directory = write_rule_files(tmp_path, prometheus_rule["spec"])
    out = run_promtool(promtool, "test", "rules", "rules_test.yaml", cwd=directory)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_unit_tests_that_catch_it_never_and_always_firing(promtool, prometheus_rule, alerts, tmp_path):
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {a["alert"] for a in alerts} <= tested, "alerts without a firing expectation in rules_test.yaml"
    mutants: dict[str, Path] = {}
    for index, alert in enumerate(alerts):
        for mutation, expr in (("never fires", "vector(0) > 1"), ("always fires", "vector(1)")):
            spec = json.loads(json.dumps(prometheus_rule["spec"]))
            [r for g in spec["groups"] for r in g["rules"] if "alert" in r][index]["expr"] = expr
            name = f"{alert['alert']} {mutation}"
            mutants[name] = write_rule_files(tmp_path / name.replace(" ", "-"), spec)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        codes = dict(
            zip(
                mutants,
                pool.map(
                    lambda d: run_promtool(promtool, "test", "rules", "rules_test.yaml", cwd=d).returncode,
                    mutants.values(),
                ),
            )
        )
    uncaught = [name for name, code in codes.items() if code == 0]
    assert not uncaught, f"rules_test.yaml passes although: {uncaught}"


# ====================================================================== the dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, expr, target) of every panel target."""
    return [
        (f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"], t)
        for p in panels(dashboard)
        if p["type"] != "row"
        for t in p["targets"]
    ]


def template_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable ${var['name']}", query))
    return out


GRAFANA_INTERVALS = re.compile(r"\$(?:\{__(?:rate_interval|interval|range)\}|__(?:rate_interval|interval|range)\b)")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def as_promql(expr: str) -> str:
    """Grafana's variables replaced so the expression is plain PromQL: intervals by 5m, the others
    (used only inside regex matchers) by `.*`."""
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_INTERVALS.sub("5m", expr))


def test_the_dashboard_is_well_formed(dashboard):
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] >= 1 and box["x"] + box["w"] <= 24, panel["title"]
        xs, ys = range(box["x"], box["x"] + box["w"]), range(box["y"], box["y"] + box["h"])
        for cell in ((x, y) for x in xs for y in ys):
            assert cell not in cells, f"panels {cells[cell]!r} and {panel['title']!r} overlap"
            cells[cell] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
    used = {m.group(1) or m.group(2) for _, e, _ in dashboard_queries(dashboard) for m in GRAFANA_VARIABLE.finditer(e)}
    used |= {m.group(1) or m.group(2) for _, q in template_queries(dashboard) for m in GRAFANA_VARIABLE.finditer(q)}
    builtin = {"__rate_interval", "__interval", "__range"}
    assert used - builtin <= set(variables), f"undefined variables: {used - builtin - set(variables)}"


def test_the_dashboard_promql_passes_promtool(promtool, dashboard, tmp_path):
    """Each panel query (variables substituted) as a recording rule: `promtool check rules` parses it."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, (_, expr, _) in enumerate(dashboard_queries(dashboard))
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    out = run_promtool(promtool, "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# ====================================================================== PromQL references


@dataclass
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Selector:
    metric: str
    matchers: list[Matcher] = field(default_factory=list)


@dataclass
class References:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # by / without / on / ignoring / group_left / group_right


_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])*)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)
AGGREGATORS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = AGGREGATORS | GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.lastgroup is None:
            raise AssertionError(f"cannot tokenize PromQL at {expr[pos : pos + 30]!r} in {expr!r}")
        pos = match.end()
        if match.lastgroup not in ("ws", "comment"):
            out.append((match.lastgroup, match.group()))
    return out


def _unquote(token: str) -> str:
    """A PromQL string literal's value (backquoted: raw; quoted: backslash escapes undone)."""
    return token[1:-1] if token[0] == "`" else re.sub(r"\\(.)", r"\1", token[1:-1])


def promql_references(expr: str) -> References:
    """Metric selectors (name + label matchers) and grouping labels of one PromQL expression.

    A tokenizer, not a parser (promtool checks the syntax): an identifier followed by `(` is a
    function or aggregation, a keyword is skipped, the labels after by/on/... are grouping labels,
    and any other identifier is a metric name, with the `{...}` right after it its matchers."""
    tokens = _tokens(expr)
    refs = References()
    i = 0

    def matchers(start: int) -> tuple[list[Matcher], int]:
        found, j = [], start + 1
        while tokens[j][1] != "}":
            if tokens[j][1] == ",":
                j += 1
                continue
            (_, label), (_, op), (kind, value) = tokens[j], tokens[j + 1], tokens[j + 2]
            assert kind == "string", f"unexpected {value!r} in the matchers of {expr!r}"
            found.append(Matcher(label, op, _unquote(value)))
            j += 3
        return found, j + 1

    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text.lower() in GROUPING and following == "(":
            j = i + 2
            while tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    refs.grouping.add(tokens[j][1])
                j += 1
            i = j + 1
        elif kind == "ident" and (text.lower() in KEYWORDS or following == "("):
            i += 1
        elif kind == "ident":
            selector = Selector(text)
            i += 1
            if following == "{":
                selector.matchers, i = matchers(i)
            refs.selectors.append(selector)
        elif text == "{":  # a selector without a metric name: {__name__="..."}
            found, i = matchers(i)
            names = [m.value for m in found if m.label == "__name__" and m.op == "="]
            assert names, f"a selector without a metric name (or with a regex __name__) in {expr!r}"
            refs.selectors.append(Selector(names[0], [m for m in found if m.label != "__name__"]))
        else:
            i += 1
    return refs


def test_the_promql_reference_reader_finds_names_labels_and_values():
    refs = promql_references(
        'sum by (model, le) (rate(pipeline_stage_seconds_bucket{stage="predict", job=~"a|b"}[5m] offset 1h)) '
        '/ ignoring(feature) group_left sum without (x) (rate({__name__="pipeline_request_rows_sum"}[5m])) '
        '> bool 0.5 or histogram_quantile(0.99, label_replace(up, "dst", "$1", "src", "(.*)")) * 1e3'
    )
    assert [s.metric for s in refs.selectors] == ["pipeline_stage_seconds_bucket", "pipeline_request_rows_sum", "up"]
    assert refs.selectors[0].matchers == [Matcher("stage", "=", "predict"), Matcher("job", "=~", "a|b")]
    assert refs.grouping == {"model", "le", "feature", "x"}
    template = label_values_query('label_values(pipeline_model_info{job=~"$job"}, model)')
    assert template is not None and template[1] == "model"


def label_values_query(query: str) -> tuple[str, str] | None:
    """(selector, label) of a Grafana `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    return (match.group(1), match.group(2)) if match else None


TEMPLATE_LABELS = re.compile(r"\{\{\s*(\w+)\s*\}\}")  # Grafana legends: {{model}}
ALERT_LABELS = re.compile(r"\$labels\.(\w+)")


# ====================================================================== what a real server exports


@dataclass
class Exported:
    """Sample name -> label name -> values seen, from one /metrics text."""

    series: dict[str, dict[str, set[str]]]
    declared: set[str]  # names declared by TYPE lines, expanded to their sample names

    @property
    def names(self) -> set[str]:
        return set(self.series) | self.declared

    @classmethod
    def parse(cls, text: str) -> Exported:
        from prometheus_client.parser import text_string_to_metric_families

        series: dict[str, dict[str, set[str]]] = {}
        declared: set[str] = set()
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
            "gauge": ("",),
            "info": ("_info",),
        }
        for family in text_string_to_metric_families(text):
            declared.update(family.name + s for s in suffixes.get(family.type, ("",)))
            for sample in family.samples:
                labels = series.setdefault(sample.name, {})
                for key, value in sample.labels.items():
                    labels.setdefault(key, set()).add(value)
        return cls(series, declared)


# The server: models that exercise every family the rules and the dashboard use.
SHADOW_BREAKER_FALLBACK = {
    "shadow_model": "candidate",
    "shadow_window": 50,
    "fallback_model": "backup",
    "fallback_budget_ms": 0.001,
    "offload_compute": True,  # always "slow"
    "breaker_failure_ratio": 0.5,
    "breaker_window": 2,
    "breaker_min_calls": 2,
    "breaker_open_s": 300,
}
GUARDED = {"auth_token_env": "MONITORING_TEST_TOKENS", "rate_limit_per_s": 0.001, "rate_limit_burst": 1}
TOKEN = "monitoring-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Any]:
    from harness.repository import add_model, make_repository
    from harness.server import Server, free_ports
    from tests.ood_models import write_mixed

    tmp = tmp_path_factory.mktemp("monitoring")
    root = make_repository(tmp / "repo", workers=0)
    # A mixed-type model: the per-column OOD series (unseen categories, missing values) exist from load.
    shutil.copytree(write_mixed(tmp / "packaged", "mixed"), root / "models" / "mixed")
    add_model(root, "candidate", source="diabetes/2")
    add_model(root, "backup")
    add_model(root, "primary", extra=SHADOW_BREAKER_FALLBACK)
    add_model(root, "guarded", extra=GUARDED)
    add_model(root, "deadline", extra={"request_timeout_ms": 0.001})
    add_model(
        root,
        "store",
        extra={
            "feature_store": {"dsn_env": "MONITORING_TEST_DSN", "table": "diabetes_features", "lookup_timeout_ms": 50}
        },
    )
    closed_port = free_ports(1)[0]  # nothing listens there: every lookup fails
    env = {
        "MONITORING_TEST_TOKENS": TOKEN,
        "MONITORING_TEST_DSN": (
            f"host=127.0.0.1 port={closed_port} dbname=none user=none password=none connect_timeout=1"
        ),
    }
    models = [(name, None) for name in ("candidate", "backup", "primary", "guarded", "deadline", "store", "mixed")]
    launched = Server.start(root / "server.log", root=root, models=models, env=env)
    try:
        yield launched
    finally:
        launched.stop()


def _rest(server: Any, model: str, body: dict[str, Any], token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{server.http_url}/v2/models/{model}/infer"
    return requests.post(url, json=body, headers=headers, timeout=30).status_code


@pytest.fixture(scope="module")
def exported(server) -> Exported:
    """/metrics after REST and gRPC requests that create every lazily created series the
    monitoring uses: fallbacks and an open breaker, 401/429/504 refusals, a failed feature lookup,
    a REST 422 (MLServer's own route, so its REST series exist whichever requests the runtime's
    fast path answers), gRPC ok and INVALID_ARGUMENT."""
    from tritonclient.grpc import service_pb2_grpc

    from harness import v2
    from harness.models import DIABETES, sample_rows

    x = sample_rows(DIABETES, 2)
    simple = {"inputs": [v2.json_tensor("X", x)]}
    with_parameters = {"parameters": {"ood_flags": True}, **simple}
    malformed = {"inputs": [{"name": "X"}]}  # not a V2 request: MLServer's own route answers 422
    statuses = {
        "primary": [_rest(server, "primary", simple) for _ in range(4)],  # slow -> fallback; breaker opens
        "backup": [
            _rest(server, "backup", simple),
            _rest(server, "backup", with_parameters),
            _rest(server, "backup", malformed),
        ],
        "guarded": [
            _rest(server, "guarded", simple),
            _rest(server, "guarded", simple, TOKEN),
            _rest(server, "guarded", simple, TOKEN),
        ],
        "deadline": [_rest(server, "deadline", simple)],
        "store": [
            _rest(
                server,
                "store",
                {"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0001"]}]},
            )
        ],
    }
    assert statuses == {
        "primary": [200] * 4,
        "backup": [200, 200, 422],
        "guarded": [401, 200, 429],
        "deadline": [504],
        "store": [503],
    }, statuses
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(v2.pb_2d_request("candidate", x), timeout=30).outputs
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(v2.pb_2d_request("candidate", x[:, :3]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return Exported.parse(requests.get(server.metrics_url, timeout=30).text)


# ====================================================================== the check


@dataclass
class Usage:
    where: str
    refs: References
    template_labels: set[str] = field(default_factory=set)  # legends / $labels in annotations
    check_values: bool = True  # promtool test series are synthetic: names and label names only


def monitoring_usages(prometheus_rule: dict[str, Any], dashboard: dict[str, Any]) -> list[Usage]:
    usages = []
    for group in prometheus_rule["spec"]["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            text = " ".join(str(v) for v in (rule.get("annotations") or {}).values())
            usages.append(
                Usage(f"prometheus-rule.yaml {name}", promql_references(rule["expr"]), set(ALERT_LABELS.findall(text)))
            )
    for where, expr, target in dashboard_queries(dashboard):
        usages.append(
            Usage(
                f"grafana-dashboard.json {where}",
                promql_references(as_promql(expr)),
                set(TEMPLATE_LABELS.findall(target.get("legendFormat", ""))),
            )
        )
    for where, query in template_queries(dashboard):
        parsed = label_values_query(query)
        assert parsed is not None, f"{where}: only label_values(selector, label) queries are checked: {query!r}"
        usages.append(Usage(f"grafana-dashboard.json {where}", promql_references(as_promql(parsed[0])), {parsed[1]}))
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for item in test.get("input_series", []):
            usages.append(
                Usage(
                    f"rules_test.yaml {test['name']!r} series {item['series']}",
                    promql_references(item["series"]),
                    check_values=False,
                )
            )
    return usages


def _closest(name: str, candidates: set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(candidates), n=2, cutoff=0.6)
    return f" (closest: {', '.join(near)})" if near else ""


def _value_problem(exported: Exported, metric: str, matcher: Matcher) -> str | None:
    seen = exported.series[metric].get(matcher.label, set()) | LAZY_LABEL_VALUES.get((metric, matcher.label), set())
    if matcher.op in ("=", "!="):
        alternatives, regex = [matcher.value], False
    else:
        if matcher.value in (".*", ".+"):
            return None
        alternatives, regex = matcher.value.split("|"), True
    for alternative in alternatives:
        hit = any(re.fullmatch(alternative, v) for v in seen) if regex else alternative in seen
        if not hit:
            return (
                f"{metric}{{{matcher.label}{matcher.op}{matcher.value!r}}}: no exported value "
                f"{'matches' if regex else 'is'} {alternative!r} (seen: {sorted(seen)})"
            )
    return None


def reference_problems(usages: list[Usage], exported: Exported) -> list[str]:
    """Every metric name, label name and label value the usages name that the server does not export."""
    problems = []
    for usage in usages:
        labels_here = set(TARGET_LABELS)
        for selector in usage.refs.selectors:
            metric = selector.metric
            if metric not in exported.names:
                problems.append(
                    f"{usage.where}: metric {metric!r} is not exported by the runtime{_closest(metric, exported.names)}"
                )
                continue
            if metric not in exported.series:
                problems.append(
                    f"{usage.where}: {metric!r} is declared but the test server has no series of it: "
                    "exercise it in the `exported` fixture so its labels can be checked"
                )
                continue
            labels = set(exported.series[metric])
            labels_here |= labels
            for matcher in selector.matchers:
                if matcher.label in TARGET_LABELS:
                    continue
                if matcher.label not in labels:
                    problems.append(
                        f"{usage.where}: {metric} has no label {matcher.label!r} (labels: {sorted(labels)})"
                    )
                elif usage.check_values:
                    problem = _value_problem(exported, metric, matcher)
                    if problem:
                        problems.append(f"{usage.where}: {problem}")
        if any(s.metric not in exported.series for s in usage.refs.selectors):
            continue  # already reported; the label sets below would be incomplete
        for label in sorted(usage.refs.grouping - labels_here):
            problems.append(f"{usage.where}: groups by {label!r}, a label none of its metrics has")
        for label in sorted(usage.template_labels - labels_here):
            problems.append(f"{usage.where}: a legend/annotation names label {label!r}, which none of its metrics has")
    return problems


def test_every_metric_the_rules_and_dashboard_use_is_exported_by_a_real_server(prometheus_rule, dashboard, exported):
    usages = monitoring_usages(prometheus_rule, dashboard)
    used = {s.metric for u in usages for s in u.refs.selectors}
    assert len(used) >= 25, sorted(used)  # the reader found the references (the dashboard alone uses more)
    problems = reference_problems(usages, exported)
    assert not problems, "monitoring names what the runtime does not export:\n" + "\n".join(problems)


def test_the_check_catches_a_misspelt_metric_label_or_value(prometheus_rule, dashboard, exported):
    """The same check on copies with one mistake each: a metric, a label, a value, a grouping label."""
    text = PROMETHEUS_RULE.read_text()
    mistakes = {
        "(pipeline_breaker_state[": "(pipeline_breaker_states[",  # metric
        # a label
        'pipeline_shadow_events_total{event=~"error|dropped"}': 'pipeline_shadow_events_total{events=~"error|dropped"}',
        'outcome=~"internal_error|': 'outcome=~"internal_eror|',  # value
        "sum by (model, version, stage, le)": "sum by (model, version, phase, le)",  # grouping label
    }
    for wrong_from, wrong_to in mistakes.items():
        assert wrong_from in text, wrong_from
        broken = yaml.safe_load(text.replace(wrong_from, wrong_to, 1))
        problems = reference_problems(monitoring_usages(broken, dashboard), exported)
        assert problems, f"the check missed {wrong_to!r}"
    misspelt = DASHBOARD.read_text().replace("pipeline_feature_cache_total", "pipeline_feature_cache_hits_total", 1)
    broken_dashboard = json.loads(misspelt)
    assert reference_problems(monitoring_usages(prometheus_rule, broken_dashboard), exported)


def test_mlserver_rest_metrics_count_every_inference_request(server, exported):
    """The REST latency alert and panels read MLServer's middleware histogram: every REST inference
    request must be in it, whichever path (the runtime's REST fast path or FastAPI) answers it."""
    from harness import v2
    from harness.models import DIABETES, sample_rows

    def counted() -> float:
        return server.metric("rest_server_request_duration_seconds_count", method="POST", status_code="200")

    body = {"inputs": [v2.json_tensor("X", sample_rows(DIABETES, 1))]}
    before = counted()
    assert [_rest(server, "backup", body) for _ in range(5)] == [200] * 5
    after = counted()
    assert after - before == 5, (
        f"MLServer's rest_server_request_duration_seconds counted {after - before:g} of 5 REST inference "
        "requests: requests it misses are invisible to PipelineInferenceLatencyP99High and the REST panels"
    )
