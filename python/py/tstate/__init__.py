"""tstate: safely attach native threads to CPython interpreters.

Importing this package registers the importing interpreter with the four
tstate designs' runtimes (ensure, handle, activate, and PEP 788's guards),
one runtime per design for the whole process, and makes their C API
available to extensions through the capsule ``tstate._tstate._C_API``.

Extension authors include ``tstate_capi.h`` (from :func:`get_include`) and
call ``import_tstate()`` in their module init; Cython users
``from tstate_capi cimport *``.  See ``docs/python.md`` in the repository.
"""

import json as _json
import os as _os
import types as _types

from . import _tstate

__all__ = [
    "__version__",
    "CAPI_VERSION",
    "get_include",
    "diagnostics",
    "set_exit_bound",
    "exit_bound",
]

#: The package's version (the Rust workspace's).
__version__ = _tstate.__version__

#: The version of the C API table in the capsule (``TSTATE_CAPI_VERSION``).
CAPI_VERSION = _tstate.CAPI_VERSION


def get_include():
    """The directory holding ``tstate_capi.h`` and ``tstate_capi.pxd``.

    For build systems, like ``numpy.get_include()``::

        Extension("mod", ["mod.c"], include_dirs=[tstate.get_include()])
    """
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


def _freeze(value):
    if isinstance(value, dict):
        return _types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def diagnostics():
    """A read-only snapshot of every design's runtime, for debugging a hang
    at exit or a refused attach.

    A mapping from design name (``"ensure"``, ``"handle"``, ``"activate"``,
    ``"guard"``) to a mapping with:

    - ``backend``: ``"cpython"``;
    - ``exit_bound_ms``: how long a finalization CPython starts waits for
      open spans (see :func:`set_exit_bound`);
    - ``interpreters``: one mapping per interpreter the runtime knows, with
      ``id``, ``main``, ``state`` (``"running"`` / ``"finalizing"``) and
      ``holders``: the threads holding it open (``thread_number``,
      ``os_thread_id``, ``thread_name``, ``kind``, ``spans`` open,
      ``held_for_us``);
    - ``counters``: the runtime's counters (``thread_states``,
      ``open_holds``, ``exit_cleanups``, ``finalize_timeouts``, ...).

    Nested values are mappings and tuples that cannot be modified.
    """
    return _freeze(_json.loads(_tstate.diagnostics_json()))


def set_exit_bound(seconds):
    """Sets how long a finalization CPython starts (interpreter exit,
    ``Py_FinalizeEx``, ``Py_EndInterpreter``) waits for open spans before
    it goes on, for every design; ``None`` restores the default (5 s).
    The holders still inside when the bound passes are printed on stderr.
    """
    if seconds is None:
        _tstate.set_exit_bound(-1)
        return
    seconds = float(seconds)
    if not seconds >= 0:
        raise ValueError("set_exit_bound: seconds must be >= 0 (or None)")
    _tstate.set_exit_bound(int(round(seconds * 1000)))


def exit_bound():
    """The current bound of :func:`set_exit_bound`, in seconds."""
    return diagnostics()["ensure"]["exit_bound_ms"] / 1000.0
