#!/usr/bin/env python3
"""Exit 0 when MLServer's V2 health endpoint answers 200, else 1.  Usage: healthcheck.py [ready|live]

The image's HEALTHCHECK and the ServingRuntime's exec probes both run this. It always asks the REST
port on loopback, so it also works in the gRPC InferenceService, whose only Knative port is gRPC.
"""

import os
import sys
import urllib.request

PROBES = ("ready", "live")


def probe_url(probe: str) -> str:
    port = os.environ.get("MLSERVER_HTTP_PORT", "8080")
    return f"http://127.0.0.1:{port}/v2/health/{probe}"


def check(url: str, timeout_s: float = 3.0) -> bool:
    # An empty ProxyHandler: a proxy set in the environment must never intercept a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError as error:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    probe = argv[1] if len(argv) > 1 else "ready"
    if probe not in PROBES:
        print(f"usage: healthcheck.py [{'|'.join(PROBES)}]", file=sys.stderr)
        return 2
    return 0 if check(probe_url(probe)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
