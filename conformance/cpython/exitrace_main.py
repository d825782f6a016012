"""The exit race's driver (run by conformance/src/exitrace.rs).

    python3.X exitrace_main.py BUILD_DIR [NTHREADS [SLEEP_MS]]

Imports exitrace_ext from BUILD_DIR (one build per CPython and design),
starts NTHREADS native threads (default 8) that call `work` through the
module's design, waits until every thread has made a call, sleeps SLEEP_MS
(default 5) and returns normally: the interpreter then finalizes while the
threads are still calling in. The module's C atexit handler prints the
EXITRACE line after Py_FinalizeEx.
"""

import sys
import time

build_dir = sys.argv[1]
nthreads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
sleep_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
sys.path.insert(0, build_dir)

import exitrace_ext  # noqa: E402


def work():
    """A little Python work: a loop, a dict, a string."""
    total = 0
    for i in range(64):
        total += i * i
    d = {"total": total, "name": "exitrace"}
    return len(str(d))


exitrace_ext.start(work, nthreads)
deadline = time.monotonic() + 5.0
while exitrace_ext.min_calls() < 1 and time.monotonic() < deadline:
    time.sleep(0.0005)
time.sleep(sleep_ms / 1000.0)
# returning normally: Py_FinalizeEx runs while the threads call in
