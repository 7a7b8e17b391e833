"""The serving core: plain Python, numpy and scikit-learn, no MLServer and no I/O beyond a model
directory. A request flows forward through it: artifacts (the verified model directory) → contract
(a V2 request becomes one validated matrix) → ood → predictor (compiled at load from the step
registry, steps/) → response (outputs and their encoding); call holds a request and its answer,
errors every user-facing failure and its status, options the model's knobs."""
