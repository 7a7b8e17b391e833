"""Benchmarks: this runtime vs the stock mlserver-sklearn runtime vs KServe's model server.

`python -m bench.run` runs the comparison; `python -m bench.profile` attributes server time per request.
The bench process itself never imports mlserver or runtime (their protobuf registrations clash with the
gRPC client stubs used to build and check the gRPC requests): every server runs as a subprocess.
"""
