"""The exit race through the `tstate` package (run by conformance/src/wheel.rs).

    python wheel_main.py EXT_DIR [NTHREADS]

Imports three independent extensions that use the package's C API --
wheel_a (exitrace_ext.c, ensure design), wheel_b (exitrace_ext.c, guard
design) and wheel_cy (Cython, ensure design) -- starts NTHREADS native
threads in each (default 4), waits until every thread has made a call,
and returns: the interpreter then finalizes while all of them call in.
Each module's C atexit handler prints its EXITRACE line.
"""

import sys
import time

ext_dir = sys.argv[1]
nthreads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
sys.path.insert(0, ext_dir)

import tstate  # noqa: E402,F401
import wheel_a  # noqa: E402
import wheel_b  # noqa: E402
import wheel_cy  # noqa: E402


def work():
    """A little Python work: a loop, a dict, a string."""
    total = 0
    for i in range(64):
        total += i * i
    d = {"total": total, "name": "wheel"}
    return len(str(d))


mods = (wheel_a, wheel_b, wheel_cy)
for m in mods:
    m.start(work, nthreads)
deadline = time.monotonic() + 5.0
while min(m.min_calls() for m in mods) < 1 and time.monotonic() < deadline:
    time.sleep(0.0005)
time.sleep(0.005)
# returning normally: Py_FinalizeEx runs while the threads call in
