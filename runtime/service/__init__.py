"""The framework-free service: one model version loaded, answering Calls, unloaded (service), with
the registry of loaded models (loaded), the feature lookup by entity id (lookup), where the
computation runs (compute) and the shadow comparison (shadow). No MLServer here: runtime.model
adapts MLServer to it, and the fast paths in runtime.integration call it directly."""
