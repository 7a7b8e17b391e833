"""The REST edge, plain ASGI in front of MLServer's app: the route, the repository lock, the model and
its token decided from the request head (guard), then the body read under its limits (framing,
body_reader, body_limits, json_depth); head and Host limits (head_limits, host); POST /predict
(legacy_api) and KServe's V1 (v1_api), both translated to V2 in the process (v2_bridge); and the fast
path's reader of the common V2 body (fast_json)."""
