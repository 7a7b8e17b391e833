"""The traffic steps of a canary rollout, defined once.

`rollout auto` walks them by default (`--steps`), and the kustomize overlays that spell the same steps
for `kubectl apply -k` are generated from them (pipeline_tools.rollout.overlays): kserve/overlays/canary
(Knative mode, the first step) and kserve/standard/canary-<percent> (Standard mode, every step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

# The canary's share of the traffic at each step, in order; 100 (the promotion) follows the last one.
CANARY_PERCENTS = (10, 25, 50)
PROMOTED = 100
DEFAULT_STEPS = (*CANARY_PERCENTS, PROMOTED)


class Action(StrEnum):
    """What a step does; the command line's command of the same name."""

    CANARY = "canary"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Step:
    """One traffic change: `canary` (percent), `promote` or `rollback`."""

    action: Action
    percent: int | None = None

    def __str__(self) -> str:
        return f"canary {self.percent}%" if self.action == Action.CANARY else str(self.action)


def plan_steps(percents: Sequence[int]) -> list[Step]:
    """The success path: a canary step for each percent below 100, then promote."""
    return [Step(Action.CANARY, p) for p in percents if p < PROMOTED] + [Step(Action.PROMOTE)]
