"""The canary steps are defined once (pipeline_tools.rollout.steps): the committed kustomize overlays are
the ones pipeline_tools.rollout.overlays generates from them, `--check` catches any drift, and what the
overlays render is what `rollout auto` steps through by default."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from pipeline_tools.rollout import auto, overlays
from pipeline_tools.rollout.steps import CANARY_PERCENTS, DEFAULT_STEPS
from tests.deploy.deploy_support import CANARY_OVERLAYS, KSERVE, by_kind, render, run_tool


def run_overlays(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_tool("pipeline_tools.rollout.overlays", *argv)


def test_the_committed_overlays_are_the_generated_ones() -> None:
    done = run_overlays("--check")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert len(overlays.generated()) == len(CANARY_PERCENTS) + 1  # every Standard step, the first Knative one


def test_check_names_every_drifted_missing_or_stale_overlay_and_write_repairs_them(tmp_path: Path) -> None:
    kserve = tmp_path / "kserve"
    shutil.copytree(KSERVE, kserve, ignore=shutil.ignore_patterns("crds"))
    first, *_, last = CANARY_PERCENTS
    drifted = kserve / overlays.STANDARD_CANARY.format(percent=first) / overlays.KUSTOMIZATION
    drifted.write_text(drifted.read_text().replace(f"value: {first}", f"value: {first + 1}"))
    missing = kserve / overlays.STANDARD_CANARY.format(percent=last)
    shutil.rmtree(missing)
    stale = kserve / overlays.STANDARD_CANARY.format(percent=99)
    stale.mkdir()
    (stale / overlays.KUSTOMIZATION).write_text(overlays.GENERATED + "\n")

    done = run_overlays("--check", "--kserve", str(kserve))
    assert done.returncode == 1 and done.stdout == ""
    named = [line.split(" is not generated")[0] for line in done.stderr.splitlines()[:-1]]
    assert sorted(named) == sorted(
        str(p) for p in (drifted, missing / overlays.KUSTOMIZATION, stale / "kustomization.yaml")
    )
    assert "--write" in done.stderr.splitlines()[-1]

    done = run_overlays("--write", "--kserve", str(kserve))
    assert done.returncode == 0, done.stderr
    assert f"removed {stale / overlays.KUSTOMIZATION}" in done.stdout and not stale.exists()
    assert run_overlays("--check", "--kserve", str(kserve)).returncode == 0
    for path, text in overlays.generated().items():
        assert (kserve / path).read_text() == text == (KSERVE / path).read_text()


def test_write_leaves_a_hand_written_overlay_in_place(tmp_path: Path) -> None:
    kserve = tmp_path / "kserve"
    shutil.copytree(KSERVE, kserve, ignore=shutil.ignore_patterns("crds"))
    hand_written = kserve / overlays.STANDARD_CANARY.format(percent=75) / overlays.KUSTOMIZATION
    hand_written.parent.mkdir()
    hand_written.write_text("# mine\n")
    done = run_overlays("--write", "--kserve", str(kserve))
    assert done.returncode != 0 and "is not a generated overlay" in done.stderr
    assert hand_written.read_text() == "# mine\n"


def test_the_overlays_render_the_steps_auto_takes_by_default() -> None:
    parser = argparse.ArgumentParser()
    auto.add_commands(parser.add_subparsers(dest="command"))
    default = parser.parse_args(["auto"]).steps
    rendered = [by_kind(render(o), "InferenceService")["diabetes"]["spec"]["canary"][0] for o in CANARY_OVERLAYS]
    assert default == DEFAULT_STEPS == (*[c["trafficPercent"] for c in rendered], 100)
    knative = by_kind(render("canary"), "InferenceService")["diabetes"]["spec"]["predictor"]
    assert knative["canaryTrafficPercent"] == default[0]
