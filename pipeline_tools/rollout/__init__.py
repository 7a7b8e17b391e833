"""`python -m pipeline_tools.rollout`: KServe canary rollout. The steps (steps) as patches of an
InferenceService (patches) sent by the cluster client (cluster), by hand (cli) or automatically
after each window's analysis (auto, analysis, sources, targets); canary_rules are KServe's
admission rules; overlays generates kserve/'s canary overlays from the steps."""
