"""Write deploy/monitoring/rules.yaml, the plain `groups:` document promtool reads, from the `spec`
of deploy/monitoring/prometheus-rule.yaml (the PrometheusRule, the one file to edit).

    python deploy/monitoring/extract_rules.py           # rewrite rules.yaml
    python deploy/monitoring/extract_rules.py --check   # exit 1 if rules.yaml is stale

Needs PyYAML only. tests/deploy/test_monitoring.py runs the same extraction and fails on a stale copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "prometheus-rule.yaml"
TARGET = HERE / "rules.yaml"
HEADER = (
    "# GENERATED from prometheus-rule.yaml (its spec) by `python deploy/monitoring/extract_rules.py`.\n"
    "# Do not edit: edit prometheus-rule.yaml and run the script. Read by promtool and rules_test.yaml.\n"
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line PromQL stays readable as a literal block.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def load_rule(path: Path = SOURCE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "PrometheusRule":
        raise ValueError(f"{path} is not a PrometheusRule")
    return doc


def render(rule: dict[str, Any]) -> str:
    """The `groups:` document: the PrometheusRule's spec, nothing added or dropped."""
    return HEADER + yaml.dump(rule["spec"], Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if rules.yaml differs from the extraction")
    args = parser.parse_args(argv)
    text = render(load_rule())
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python {Path(__file__).relative_to(HERE.parents[1])}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
