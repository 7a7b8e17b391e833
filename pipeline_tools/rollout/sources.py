"""Where an analysis window's numbers come from: each runtime metric's increase per version, from a
Prometheus HTTP API (`increase(...[window])` at the window's end) or, without Prometheus, from two
scrapes of the servers' own metrics endpoints differenced per series; both fill the same Side.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipeline_tools.rollout.analysis import AnalysisError, Side, Window

# The runtime's metrics (runtime/observation/metrics.py, docs/operations.md).
REQUESTS = "pipeline_requests_total"
ROWS = "pipeline_request_rows_sum"
OOD_ROWS = "pipeline_ood_rows_total"
STAGE_BUCKETS = "pipeline_stage_seconds_bucket"
PREDICTIONS = "pipeline_prediction_bucket_total"

HTTP_TIMEOUT_S = 10.0


Fetch = Callable[[str, tuple[str, ...]], dict[tuple[str, ...], float]]


def build_side(fetch: Fetch) -> Side:
    """A Side from `fetch(metric, by)`: the metric's increases summed by the labels `by`."""
    side = Side()
    side.outcomes = {k[0]: v for k, v in fetch(REQUESTS, ("outcome",)).items()}
    side.rows = sum(fetch(ROWS, ()).values())
    side.ood_rows = sum(fetch(OOD_ROWS, ()).values())
    for (stage, le), v in fetch(STAGE_BUCKETS, ("stage", "le")).items():
        side.stages.setdefault(stage, {})[float(le)] = v
    side.predictions = {k[0]: v for k, v in fetch(PREDICTIONS, ("bucket",)).items()}
    return side


MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def selector(model: str, version: str | None, extra: str | None) -> str:
    """The label matchers of one side: model, version (if given) and any extra matchers."""
    parts = [f'model="{model}"'] + ([f'version="{version}"'] if version else [])
    return ",".join(parts + ([extra.strip(" ,")] if extra else []))


def parse_matchers(text: str) -> list[tuple[str, str, str]]:
    """`a="b",c=~"d"` as [(name, op, value)]; AnalysisError if it does not parse."""
    matchers, position = [], 0
    text = text.strip()
    while position < len(text):
        match = MATCHER.match(text, position)
        if not match:
            raise AnalysisError(f'cannot read the label matchers {text!r} (expected name="value", ...)')
        name, op, value = match.groups()
        matchers.append((name, op, bytes(value, "utf-8").decode("unicode_escape")))
        position = match.end()
    return matchers


class Source(Protocol):
    description: str

    def begin(self) -> Any:
        """Mark the start of a window (a scrape source scrapes here)."""

    def collect(self, begun: Any, end: float | None = None) -> Window:
        """The window from `begun` to now (or, for Prometheus, to `end`)."""


class PrometheusSource:
    """Increases over the window from a Prometheus HTTP API: `sum by (...) (increase(m{sel}[w]))`."""

    def __init__(self, url: str, stable: str, canary: str, timeout: float = HTTP_TIMEOUT_S):
        self.url, self.stable, self.canary, self.timeout = url.rstrip("/"), stable, canary, timeout
        for side in (stable, canary):
            parse_matchers(side)  # fail early on a malformed selector
        self.description = f"prometheus {self.url}: stable {{{stable}}}, canary {{{canary}}}"

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read() or b"{}")
            except ValueError:
                body = {"error": f"HTTP {error.code}"}
        except (OSError, ValueError) as error:
            raise AnalysisError(f"cannot query Prometheus at {self.url}: {error}") from None
        if body.get("status") != "success":
            raise AnalysisError(f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data.get("resultType") != "vector":
            raise AnalysisError(f"Prometheus answered {expr!r} with a {data.get('resultType')}, not a vector")
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def side(self, matchers: str, seconds: float, end: float) -> Side:
        rng = f"{max(1, int(round(seconds * 1000)))}ms"

        def fetch(metric: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
            expr = f"sum by ({', '.join(by)}) (increase({metric}{{{matchers}}}[{rng}]))"
            out: dict[tuple[str, ...], float] = {}
            for labels, value in self.query(expr, end):
                if not math.isnan(value):
                    key = tuple(labels.get(k, "") for k in by)
                    out[key] = out.get(key, 0.0) + value
            return out

        return build_side(fetch)

    def begin(self) -> float:
        return time.time()

    def collect(self, begun: float | None, end: float | None = None, seconds: float | None = None) -> Window:
        end = time.time() if end is None else end
        seconds = seconds if seconds is not None else end - (begun if begun is not None else end)
        if seconds <= 0:
            raise AnalysisError("the analysis window must be longer than 0 s")
        return Window(
            self.side(self.stable, seconds, end), self.side(self.canary, seconds, end), seconds, end, self.description
        )


Samples = dict[tuple[str, str, frozenset], float]  # (endpoint, sample name, labels) -> value


class ScrapeSource:
    """Without Prometheus: every metrics endpoint of each side scraped at the start and at the end
    of the window, each series differenced (a counter that went down restarted: its new value is
    the increase), then summed as the Prometheus queries sum. Only = matchers."""

    def __init__(
        self,
        stable_urls: Sequence[str],
        canary_urls: Sequence[str],
        stable: str,
        canary: str,
        timeout: float = HTTP_TIMEOUT_S,
    ):
        self.urls = {"stable": list(stable_urls), "canary": list(canary_urls)}
        self.matchers = {"stable": self._equalities(stable), "canary": self._equalities(canary)}
        self.timeout = timeout
        self.description = (
            f"scrapes of {', '.join(stable_urls)} (stable {{{stable}}}) and "
            f"{', '.join(canary_urls)} (canary {{{canary}}})"
        )

    @staticmethod
    def _equalities(text: str) -> dict[str, str]:
        matchers = parse_matchers(text)
        if any(op != "=" for _, op, _ in matchers):
            raise AnalysisError(f"scraping supports only = matchers, not {text!r}: use --prometheus for regexes")
        return {name: value for name, _, value in matchers}

    def scrape(self, url: str) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, ValueError) as error:
            raise AnalysisError(f"cannot scrape {url}: {error}") from None
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(url, s.name, frozenset(s.labels.items()))] = float(s.value)
        return samples

    def snapshot(self) -> dict[str, Samples]:
        out: dict[str, Samples] = {}
        for side, urls in self.urls.items():
            out[side] = {}
            for url in urls:
                out[side].update(self.scrape(url))
        return out

    def begin(self) -> tuple[float, dict[str, Samples]]:
        return time.time(), self.snapshot()

    def collect(self, begun: tuple[float, dict[str, Samples]], end: float | None = None) -> Window:
        started, before = begun
        after = self.snapshot()
        now = time.time()
        sides = {side: self._side(before[side], after[side], self.matchers[side]) for side in after}
        return Window(sides["stable"], sides["canary"], now - started, now, self.description)

    @staticmethod
    def _side(before: Samples, after: Samples, matchers: dict[str, str]) -> Side:
        increases: dict[tuple[str, frozenset], float] = {}
        for key, value in after.items():
            _, name, labels = key
            if not all(dict(labels).get(k) == v for k, v in matchers.items()):
                continue
            previous = before.get(key, 0.0)
            increase = value - previous if value >= previous else value
            increases[(name, labels)] = increases.get((name, labels), 0.0) + increase

        def fetch(metric: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {}
            for (name, labels), value in increases.items():
                if name == metric:
                    label_map = dict(labels)
                    key = tuple(label_map.get(k, "") for k in by)
                    out[key] = out.get(key, 0.0) + value
            return out

        return build_side(fetch)
