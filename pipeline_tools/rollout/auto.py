"""Canary analysis (`analyze`) and automatic progressive delivery (`auto`) from the runtime's metrics.

    python -m pipeline_tools.rollout.auto analyze --prometheus URL [--window 60s] [--end TIME] [selection] [thresholds]
    python -m pipeline_tools.rollout.auto analyze --stable-metrics URL... --canary-metrics URL... [--window 60s] ...
    python -m pipeline_tools.rollout.auto [-n NAMESPACE] --name NAME auto --steps 10,25,50,100 [--mode M]
        [--storage-uri URI] (source, selection, thresholds) [--settle S] [--window W] [--max-inconclusive N] [--dry-run]
    python -m pipeline_tools.rollout.auto auto --target nginx --nginx-conf CONF --stable-server H:P \
        --canary-server H:P ...

This module is `auto`'s stepping (traffic through a target, pipeline_tools.rollout.targets, e.g.
10 -> 25 -> 50 -> 100, with an analysis after each step: roll back on the first failed analysis,
promote after the last one; every decision one JSON line on stdout with its numbers) and the command
line of both. `analyze` judges one window from a source (pipeline_tools.rollout.sources) with
pipeline_tools.rollout.analysis, prints the table and logs the decision as one JSON line on stderr.
`add_commands` registers both on pipeline_tools.rollout.cli's parser (`python -m pipeline_tools.rollout analyze|auto
...`); `main` runs them standalone. `auto --dry-run` contacts nothing and prints every patch of the
whole run (the success path, then the rollback patch) in order.

None of the rollout modules imports mlserver (the deploy tests import them next to gRPC clients).
See docs/rollout.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_tools.rollout.analysis import (
    EXIT_ERROR,
    EXIT_INSUFFICIENT,
    EXIT_PROMOTE,
    EXIT_ROLLBACK,
    INSUFFICIENT,
    PROMOTE,
    ROLLBACK,
    AnalysisError,
    Thresholds,
    analyze,
    render,
)
from pipeline_tools.rollout.patches import SERVERLESS, STANDARD
from pipeline_tools.rollout.sources import PrometheusSource, ScrapeSource, selector
from pipeline_tools.rollout.steps import DEFAULT_STEPS, PROMOTED, Action, Step, plan_steps
from pipeline_tools.rollout.targets import DEFAULT_UPSTREAM, InferenceServiceTarget, NginxTarget, Target

DEFAULT_MODEL = "diabetes"

logger = logging.getLogger("pipeline_tools.rollout")

# --------------------------------------------------------------------------------------- auto


@dataclass
class AutoOptions:
    steps: tuple[int, ...]
    settle_s: float
    window_s: float
    max_inconclusive: int


def dry_run(target: Target, options: AutoOptions) -> str:
    """What `auto --dry-run` prints: each patch of the success path in order, with the analysis
    between them, then the rollback patch. Lines that are not a patch start with #."""
    steps = plan_steps(options.steps)
    lines = []
    for number, step in enumerate(steps, start=1):
        lines.append(f"# step {number}/{len(steps)}: {step} ({target.describe(step)})")
        lines.append(target.plan(step))
        if step.action == Action.CANARY:
            lines.append(
                f"# wait {options.settle_s:g}s, then analyze every {options.window_s:g}s: promote -> next step, "
                f"rollback -> rollback, not enough data -> analyze again (at most {options.max_inconclusive} "
                "times, then rollback)"
            )
    rollback = Step(Action.ROLLBACK)
    lines.append(f"# on rollback ({target.describe(rollback)})")
    lines.append(target.plan(rollback))
    return "\n".join(lines)


def run_auto_steps(
    target: Target,
    source: Any,
    options: AutoOptions,
    thresholds: Thresholds,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> int:
    """Step, analyze, step ... promote, or roll back at the first failed analysis (or after
    max_inconclusive windows without enough data). Exit 0 promoted, 1 rolled back, 2 a step could
    not be applied (after a rollback attempt)."""
    steps = plan_steps(options.steps)
    for number, step in enumerate(steps, start=1):
        try:
            applied = target.apply(step)
        except Exception as error:  # noqa: BLE001 - any failure to move traffic stops the rollout
            _decision("step_failed", step=number, action=step.action, percent=step.percent, error=str(error))
            return (
                EXIT_ERROR
                if step.action == Action.ROLLBACK
                else _rollback(target, f"step {step} failed: {error}", EXIT_ERROR)
            )
        _decision("step", step=number, action=step.action, percent=step.percent, target=applied)
        if step.action == Action.PROMOTE:
            _decision("promote", decision=PROMOTE, exit_code=EXIT_PROMOTE, steps=list(options.steps))
            return EXIT_PROMOTE
        sleep(options.settle_s)
        begun = source.begin()
        for attempt in range(1, options.max_inconclusive + 1):
            sleep(options.window_s)
            try:
                analysis = analyze(source.collect(begun), thresholds)
            except AnalysisError as error:  # no numbers: as inconclusive as too few numbers
                _decision(
                    "analysis",
                    step=number,
                    percent=step.percent,
                    attempt=attempt,
                    decision=INSUFFICIENT,
                    exit_code=EXIT_INSUFFICIENT,
                    error=str(error),
                )
                continue
            report(render(analysis, f"step {number}/{len(steps)}: {step}, analysis {attempt}"))
            _decision("analysis", step=number, percent=step.percent, attempt=attempt, **analysis.to_dict())
            if analysis.decision == ROLLBACK:
                return _rollback(target, f"analysis at {step} failed: {', '.join(analysis.reasons)}", EXIT_ROLLBACK)
            if analysis.decision == PROMOTE:
                break
        else:
            return _rollback(
                target, f"not enough data at {step} after {options.max_inconclusive} windows", EXIT_ROLLBACK
            )
    return EXIT_PROMOTE  # not reached: the plan ends in promote


def _rollback(target: Target, reason: str, code: int) -> int:
    try:
        applied = target.apply(Step(Action.ROLLBACK))
    except Exception as error:  # noqa: BLE001
        _decision("rollback_failed", decision=ROLLBACK, reason=reason, error=str(error), exit_code=EXIT_ERROR)
        return EXIT_ERROR
    _decision("rollback", decision=ROLLBACK, reason=reason, target=applied, exit_code=code)
    return code


def _decision(event: str, **numbers: Any) -> None:
    logger.info(event, extra={"event": event, **numbers})


@contextlib.contextmanager
def json_log(stream: Any) -> Any:
    """The decision log: one JSON line per record on `stream` (runtime.observation.logs.JsonFormatter)."""
    from runtime.observation.logs import JsonFormatter

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


# --------------------------------------------------------------------------------------- command line


def duration(text: str) -> float:
    """Seconds from `90`, `90s`, `1500ms`, `5m`, `1h`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 1500ms, 5m)")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return value


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0")
    return value


def timestamp(text: str) -> float:
    """Unix seconds, or an RFC 3339 / ISO 8601 time (UTC when it names no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def steps(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of percents") from None
    if (
        not values
        or values[-1] != PROMOTED
        or any(not 0 < v <= PROMOTED for v in values)
        or list(values) != sorted(set(values))
    ):
        raise argparse.ArgumentTypeError(f"{text!r}: increasing percents within 1..100, ending in 100 (the promotion)")
    return values


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("where the numbers come from (one of)")
    source.add_argument("--prometheus", metavar="URL", help="a Prometheus HTTP API, e.g. http://prometheus:9090")
    source.add_argument(
        "--stable-metrics",
        metavar="URL",
        nargs="+",
        default=[],
        help="without Prometheus: the stable version's metrics endpoints (each pod)",
    )
    source.add_argument(
        "--canary-metrics",
        metavar="URL",
        nargs="+",
        default=[],
        help="without Prometheus: the canary's metrics endpoints",
    )
    select = parser.add_argument_group("which series are which version")
    select.add_argument("--model", default=DEFAULT_MODEL, help=f"the served model name (default {DEFAULT_MODEL})")
    select.add_argument("--stable-version", default="1", help="its `version` label (default 1; '' for any)")
    select.add_argument("--canary-version", default="2", help="its `version` label (default 2; '' for any)")
    select.add_argument(
        "--stable-selector", metavar="MATCHERS", help="more label matchers for the stable series, e.g. 'job=\"stable\"'"
    )
    select.add_argument("--canary-selector", metavar="MATCHERS", help="the same for the canary's")
    limits = parser.add_argument_group("thresholds (docs/rollout.md explains the defaults)")
    d = Thresholds()
    limits.add_argument("--min-requests", type=int, default=d.min_requests, help=f"per side (default {d.min_requests})")
    limits.add_argument(
        "--min-rows", type=int, default=d.min_rows, help=f"predicted rows per side (default {d.min_rows})"
    )
    limits.add_argument(
        "--max-5xx-increase",
        type=float,
        default=d.max_5xx_increase,
        help=f"over the stable's 5xx share (default {d.max_5xx_increase:g})",
    )
    limits.add_argument(
        "--max-4xx-increase",
        type=float,
        default=d.max_4xx_increase,
        help=f"over the stable's 4xx share (default {d.max_4xx_increase:g})",
    )
    limits.add_argument(
        "--latency-ratio",
        type=float,
        default=d.latency_ratio,
        help=f"canary quantile / stable quantile (default {d.latency_ratio:g}) ...",
    )
    limits.add_argument(
        "--latency-slack-ms",
        type=float,
        default=d.latency_slack_s * 1000,
        help="... or this much slower, whichever allows more (default %(default)g)",
    )
    limits.add_argument(
        "--max-ood-increase",
        type=float,
        default=d.max_ood_increase,
        help=f"over the stable's OOD row share (default {d.max_ood_increase:g})",
    )
    limits.add_argument("--max-psi", type=float, default=d.max_psi, help=f"default {d.max_psi:g}")
    limits.add_argument(
        "--alpha", type=float, default=d.alpha, help=f"chi-square significance a PSI breach needs (default {d.alpha:g})"
    )


def add_commands(subparsers: Any) -> None:
    """Register `analyze` and `auto` on an argparse subparsers object (pipeline_tools.rollout.cli's, or
    main()'s here). Each sets `handler`: the caller runs `args.handler(args)`. auto reads the
    parent parser's `namespace` / `name` (the InferenceService) when present. Its own flags use
    dests of their own (auto_dry_run, isvc_mode) so a parent's checks on `dry_run` / `mode` do not
    apply to it."""
    analyze_parser = subparsers.add_parser(
        "analyze",
        help="compare the canary with the stable version over a window: exit 0 promote, 1 roll back, 3 not enough data",
        description="Compare the canary with the stable version over a window (Prometheus, or two scrapes "
        "of each side's metrics): error rates (5xx, 4xx), stage latency quantiles, the out-of-distribution "
        "rate and the predictions (PSI, chi-square). Exit 0 promote, 1 roll back, 3 not enough data.",
    )
    _add_common(analyze_parser)
    analyze_parser.add_argument(
        "--window",
        type=positive_duration,
        default=60.0,
        help="how far back (Prometheus) or between the scrapes (default 60s)",
    )
    analyze_parser.add_argument(
        "--end", type=timestamp, help="Prometheus: the window's end, Unix time or ISO 8601 (default now)"
    )
    analyze_parser.set_defaults(handler=run_analyze)

    auto = subparsers.add_parser(
        "auto",
        help="step the canary's traffic with an analysis after each step; promote or roll back",
        description="Step the canary's share of traffic with `analyze` between the steps, then promote; "
        "roll back at the first failed analysis. One JSON line per decision on stdout.",
    )
    _add_common(auto)
    auto.add_argument(
        "--steps",
        type=steps,
        default=DEFAULT_STEPS,
        help=f"canary percents, the last 100 (= promote) (default {','.join(map(str, DEFAULT_STEPS))})",
    )
    auto.add_argument(
        "--settle", type=duration, default=30.0, help="wait after each step before its window starts (default 30s)"
    )
    auto.add_argument("--window", type=positive_duration, default=60.0, help="analysis window per step (default 60s)")
    auto.add_argument(
        "--max-inconclusive", type=int, default=3, help="windows without enough data before rolling back (default 3)"
    )
    auto.add_argument(
        "--dry-run",
        dest="auto_dry_run",
        action="store_true",
        help="contact nothing: print every patch of the run, then the rollback patch",
    )
    auto.add_argument(
        "--target",
        choices=("isvc", "nginx"),
        default="isvc",
        help="the InferenceService (default; -n / --name) or an nginx upstream",
    )
    isvc = auto.add_argument_group("--target isvc (the patches of `python -m pipeline_tools.rollout`)")
    isvc.add_argument(
        "--mode",
        dest="isvc_mode",
        choices=(SERVERLESS, STANDARD),
        help="the service's deploymentMode (needed with --dry-run)",
    )
    isvc.add_argument("--storage-uri", help="the canary's model (serverless: a new revision at the first step)")
    isvc.add_argument("--canary-name", help="standard: the canary's name (default v<version>)")
    nginx = auto.add_argument_group("--target nginx")
    nginx.add_argument("--nginx-conf", type=Path, help="the config file holding the upstream")
    nginx.add_argument("--nginx-upstream", default=DEFAULT_UPSTREAM, help=f"default {DEFAULT_UPSTREAM}")
    nginx.add_argument("--stable-server", metavar="HOST:PORT", help="the stable server's address in the upstream")
    nginx.add_argument("--canary-server", metavar="HOST:PORT", help="the canary's")
    nginx.add_argument("--nginx-prefix", type=Path, help="nginx -p for the reload")
    nginx.add_argument("--nginx-error-log", type=Path, help="nginx -e for the reload")
    nginx.add_argument("--nginx-bin", default="nginx", help="default nginx")
    auto.set_defaults(handler=run_auto)


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    return Thresholds(
        min_requests=args.min_requests,
        min_rows=args.min_rows,
        max_5xx_increase=args.max_5xx_increase,
        max_4xx_increase=args.max_4xx_increase,
        latency_ratio=args.latency_ratio,
        latency_slack_s=args.latency_slack_ms / 1000.0,
        max_ood_increase=args.max_ood_increase,
        max_psi=args.max_psi,
        alpha=args.alpha,
    )


def source_from(args: argparse.Namespace) -> Any:
    stable = selector(args.model, args.stable_version or None, args.stable_selector)
    canary = selector(args.model, args.canary_version or None, args.canary_selector)
    scraping = bool(args.stable_metrics or args.canary_metrics)
    if bool(args.prometheus) == scraping or (scraping and not (args.stable_metrics and args.canary_metrics)):
        raise AnalysisError("give either --prometheus URL or both --stable-metrics and --canary-metrics")
    if args.prometheus:
        return PrometheusSource(args.prometheus, stable, canary)
    return ScrapeSource(args.stable_metrics, args.canary_metrics, stable, canary)


def run_analyze(args: argparse.Namespace) -> int:
    try:
        source = source_from(args)
        if isinstance(source, PrometheusSource):
            window = source.collect(None, end=args.end, seconds=args.window)
        else:
            if args.end is not None:
                raise AnalysisError("--end needs --prometheus: scrapes see only the present")
            begun = source.begin()
            time.sleep(args.window)
            window = source.collect(begun)
        analysis = analyze(window, thresholds_from(args))
    except AnalysisError as error:
        print(f"rollout analyze: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(render(analysis, f"rollout analyze: model {args.model}"))
    with json_log(sys.stderr):
        _decision("analysis", **analysis.to_dict())
    return analysis.exit_code


def target_from(args: argparse.Namespace) -> Target:
    if args.target == "nginx":
        missing = [
            flag
            for flag, value in (
                ("--nginx-conf", args.nginx_conf),
                ("--stable-server", args.stable_server),
                ("--canary-server", args.canary_server),
            )
            if not value
        ]
        if missing:
            raise AnalysisError(f"--target nginx needs {', '.join(missing)}")
        return NginxTarget(
            conf=args.nginx_conf,
            stable=args.stable_server,
            canary=args.canary_server,
            upstream=args.nginx_upstream,
            prefix=args.nginx_prefix,
            nginx=args.nginx_bin,
            error_log=args.nginx_error_log,
        )
    if args.auto_dry_run and not args.isvc_mode:
        raise AnalysisError(
            "--dry-run needs --mode serverless|standard: without a cluster there is no annotation to read"
        )
    name = getattr(args, "name", None)
    if not name:
        raise AnalysisError("--target isvc needs --name NAME: the InferenceService (e.g. --name diabetes)")
    return InferenceServiceTarget(
        name=name,
        namespace=getattr(args, "namespace", None),
        mode=args.isvc_mode,
        storage_uri=args.storage_uri,
        canary_name=args.canary_name,
    )


def run_auto(args: argparse.Namespace) -> int:
    options = AutoOptions(args.steps, args.settle, args.window, max(1, args.max_inconclusive))
    try:
        if args.auto_dry_run:
            print(dry_run(target_from(args), options))
            return 0
        source = source_from(args)
        target = target_from(args)
    except AnalysisError as error:
        print(f"rollout auto: {error}", file=sys.stderr)
        return EXIT_ERROR
    with json_log(sys.stdout):
        _decision(
            "start",
            steps=list(options.steps),
            window_s=options.window_s,
            settle_s=options.settle_s,
            source=source.description,
            target=target.describe(Step(Action.CANARY, options.steps[0])),
        )
        return run_auto_steps(
            target, source, options, thresholds_from(args), report=lambda text: print(text, file=sys.stderr)
        )


def main(argv: list[str] | None = None) -> int:
    """Standalone: `python -m pipeline_tools.rollout.auto [-n NS] [--name NAME] analyze|auto ...`,
    the same global options as pipeline_tools.rollout.cli."""
    parser = argparse.ArgumentParser(prog="python -m pipeline_tools.rollout.auto", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", help="auto --target isvc: default the kubeconfig context's namespace")
    parser.add_argument("--name", help="auto --target isvc: the InferenceService (its metadata.name)")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
