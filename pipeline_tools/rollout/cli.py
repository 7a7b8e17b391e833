"""Canary rollout of a KServe InferenceService from the command line, in either deployment mode.

    python -m pipeline_tools.rollout [-n NAMESPACE] --name NAME status
    python -m pipeline_tools.rollout [-n NAMESPACE] --name NAME canary PERCENT [--storage-uri URI] [--canary-name N]
    python -m pipeline_tools.rollout [-n NAMESPACE] --name NAME promote [--storage-uri URI] [--canary-name N]
    python -m pipeline_tools.rollout [-n NAMESPACE] --name NAME rollback
    python -m pipeline_tools.rollout analyze ...   /   python -m pipeline_tools.rollout auto ...
        (both pipeline_tools.rollout.auto)
    (canary, promote and rollback also take --mode serverless|standard and --dry-run)

The InferenceService's deploymentMode annotation picks the field (else the mode KServe recorded in its
status; `--mode` must agree with it): canaryTrafficPercent in Serverless (Knative) mode, spec.canary[] in
Standard mode. Each command is one step: its JSON merge patch comes from pipeline_tools.rollout.patches,
which checks it against KServe v0.20.0's admission rules on the object just read (a patch they refuse
is not sent), and pipeline_tools.rollout.cluster sends it. `rollout auto` sends the very same patches.

`--name` names the InferenceService a command reads or changes (its manifest's metadata.name); there is
no default, so a command never acts on a service it was not told about (a dry run changes none).
`--dry-run` prints that exact patch and contacts nothing, so it needs `--mode` (there is no object to
read the annotation from) and, in Standard mode, the storageUri of the canary; its output can feed
`kubectl patch isvc NAME --type merge -p "$(python -m pipeline_tools.rollout ... --dry-run)"`.

This module must not import MLServer (the deploy tests import it next to gRPC clients).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline_tools.rollout import auto as rollout_auto
from pipeline_tools.rollout import cluster
from pipeline_tools.rollout.patches import (
    SERVERLESS,
    STANDARD,
    Change,
    RolloutError,
    build_patch,
    canary_name_problem,
    rollout_status,
)
from pipeline_tools.rollout.steps import Action, Step

# What a command that cannot reach a cluster tells the user to do.
NO_CLUSTER_HINT = (
    "point KUBECONFIG (or ~/.kube/config) at the cluster serving the InferenceService, or print the patch "
    "without one: --dry-run --mode serverless|standard"
)


def percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not within 0..100")
    return value


def dns_label(text: str) -> str:
    problem = canary_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline_tools.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument("--name", help="the InferenceService's name (its metadata.name); required unless --dry-run")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="print the predictor's revisions or canaries as JSON")
    canary = commands.add_parser("canary", help="send PERCENT of the traffic to the new version")
    canary.add_argument("percent", type=percent, metavar="PERCENT")
    promote = commands.add_parser("promote", help="the new version takes 100%% of the traffic")
    commands.add_parser("rollback", help="all traffic back on the stable version")
    for command in (canary, promote):
        command.add_argument(
            "--storage-uri",
            help="the new version's model (serverless: a new revision; standard: the canary's model, "
            "default: the deployed canary's)",
        )
        command.add_argument("--canary-name", type=dns_label, help="standard: the canary's name (default: v<version>)")
    for name in ("canary", "promote", "rollback"):
        commands.choices[name].add_argument(
            "--mode", choices=(SERVERLESS, STANDARD), help="must match the service's deploymentMode"
        )
        commands.choices[name].add_argument(
            "--dry-run", action="store_true", help="print the merge patch and send nothing (needs --mode)"
        )
    rollout_auto.add_commands(commands)  # analyze, auto
    args = parser.parse_args(argv)
    if args.name is None and not hasattr(args, "handler") and not getattr(args, "dry_run", False):
        parser.error(f"{args.command} needs --name NAME: the InferenceService to act on (e.g. --name diabetes)")
    if getattr(args, "dry_run", False) and args.mode is None:
        # Guessing would repeat kserve#5335: a Serverless patch on a Standard service is silently ignored.
        parser.error("--dry-run needs --mode serverless|standard: without a cluster there is no annotation to read")
    return args


def change_from(args: argparse.Namespace) -> Change:
    """The step a canary, promote or rollback command asks for (rollback takes no model)."""
    return Change(
        Step(Action(args.command), getattr(args, "percent", None)),
        storage_uri=getattr(args, "storage_uri", None),
        canary_name=getattr(args, "canary_name", None),
    )


def warn(message: str) -> None:
    print(f"rollout: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    api, namespace = cluster.connect(args.namespace)
    if args.command == "status":
        isvc = cluster.get_isvc(api, namespace, args.name)
    else:
        isvc = cluster.apply_change(api, namespace, args.name, change_from(args), args.mode, warn)
    print(json.dumps(rollout_status(isvc), indent=2))
    return 0


def dry_run(args: argparse.Namespace) -> int:
    patch = build_patch(change_from(args), args.mode)
    namespace = args.namespace or "(kubeconfig default)"
    target = f"{cluster.PLURAL}.{cluster.GROUP}/{args.name or 'NAME'} in namespace {namespace}"
    print(
        f"rollout: dry run, {args.mode} mode, merge patch for {target} (not checked against it):",
        file=sys.stderr,
    )
    print(json.dumps(patch))
    return 0


def live(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except Exception as error:
        message = cluster.failure(error)
        if message is None:
            raise
        print(f"rollout: {message}", file=sys.stderr)
        if cluster.no_configuration(error):
            print(f"rollout: {NO_CLUSTER_HINT}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if hasattr(args, "handler"):  # analyze, auto (pipeline_tools.rollout.auto)
        return args.handler(args)
    try:
        if getattr(args, "dry_run", False):
            return dry_run(args)
        return live(args)
    except RolloutError as error:
        print(f"rollout: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
