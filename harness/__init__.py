"""Development helpers shared by tests/ and bench/ (not shipped in the image).

Client side only: nothing here imports mlserver or a runtime module that does. The runtime and
the kserve/tritonclient V2 clients register the same protobuf symbols, so a process holding the
clients may import the MLServer-free core (runtime.core.artifacts, runtime.core.datatypes, ...) but never
runtime.model or runtime.integration; servers run as subprocesses.

    harness.server      Server (`mlserver start .` on free loopback ports), free_ports()
    harness.repository  throwaway model repositories (settings.json + model dirs from models/)
    harness.models      the shipped models: catalogue, artifacts, expected predictions, parity
    harness.mixed_model a small model with string columns and gaps, packaged on demand
    harness.v2          V2 request/response helpers (JSON tensors, gRPC protos)
    harness.strategies  hypothesis strategies for raw V2 requests
    harness.fuzz        sends fuzz cases and judges the answers
    harness.soak        bounded soak with memory sampling
    harness.otlp        an in-process OTLP/gRPC trace receiver (the collector's trace service)
"""
