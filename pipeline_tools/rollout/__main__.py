"""`python -m pipeline_tools.rollout`: the canary rollout command (pipeline_tools.rollout.cli)."""

from pipeline_tools.rollout.cli import main

raise SystemExit(main())
