"""The operator tools, run on a workstation or in CI, never in the served image: `package` (a fitted
pipeline → a model directory), `train` (the shipped models) and `rollout` (KServe canaries, their
analysis and automatic progressive delivery). They import only the runtime's framework-free core."""
