"""`mlserver start DIR` with cProfile on the main thread (the event loop), switched by signals.

    BENCH_PROFILE_DIR=/tmp/x PYTHONPATH=<repo> python -m bench._profiled_mlserver start DIR

SIGUSR1 starts a profiling window (fresh profile); SIGUSR2 ends it and writes
$BENCH_PROFILE_DIR/window-<n>.prof (n = 1, 2, ...). The driver waits for that file before it sends the
next SIGUSR1 (a handler can be interrupted by the next signal's handler). Used by `python -m bench.profile` with
parallel_workers 0, so HTTP, gRPC, codecs and the runtime's predict all run on the profiled thread.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType

_out = os.environ["BENCH_PROFILE_DIR"]


@dataclass
class _Windows:
    prof: cProfile.Profile | None = None  # the open window's profile
    n: int = 0  # windows written


_state = _Windows()


def _start(signum: int, frame: FrameType | None) -> None:
    if _state.prof is not None:
        _state.prof.disable()
    # Default (wall-clock) timer: a thread-CPU-time timer costs a syscall per call and inflated
    # the profile far more, with the same shares by layer (docs/performance.md, "Profiling").
    prof = cProfile.Profile()
    _state.prof = prof
    prof.enable()


def _stop(signum: int, frame: FrameType | None) -> None:
    prof = _state.prof
    if prof is None:
        return
    prof.disable()
    _state.prof = None
    _state.n += 1
    path = os.path.join(_out, f"window-{_state.n}.prof")
    prof.dump_stats(path + ".tmp")
    os.replace(path + ".tmp", path)


def main() -> None:
    os.makedirs(_out, exist_ok=True)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    from mlserver.cli.main import main as mlserver_main

    sys.argv = ["mlserver", *sys.argv[1:]]
    mlserver_main()


if __name__ == "__main__":
    main()
