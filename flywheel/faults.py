"""Named kill points, for the fault-injection tests (``tests/test_fault_injection.py``).

``COSMICMAN_KILL_AT=<point>`` (or ``<point>@<n>``) makes the process SIGKILL itself the first
(or n-th) time it reaches ``kill_point("<point>")``: no cleanup, no ``finally``, exactly what
a node failure or the OOM killer does. Unset, a kill point costs one dictionary lookup. The
points sit where a stage has produced something and not yet recorded it (a file written
but not renamed, data pushed but not tagged), the moments a kill is most likely to corrupt.
"""

from __future__ import annotations

import os
import signal

ENV = "COSMICMAN_KILL_AT"
_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
