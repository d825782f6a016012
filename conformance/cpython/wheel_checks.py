"""Checks of the installed `tstate` package (run by conformance/src/wheel.rs).

    python wheel_checks.py EXT_DIR VERSION

Prints one line per check: `CHECK <name> ok <detail>` or
`CHECK <name> FAIL <detail>`; never stops at the first failure.
"""

import os
import subprocess
import sys
import traceback

ext_dir, want_version = sys.argv[1], sys.argv[2]
sys.path.insert(0, ext_dir)


def check(name):
    def wrap(f):
        try:
            detail = f()
            print(f"CHECK {name} ok {detail or ''}".rstrip())
        except BaseException as e:  # noqa: BLE001
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"CHECK {name} FAIL {tb}")
        sys.stdout.flush()
        return f

    return wrap


import tstate  # noqa: E402


def header_capi_version():
    """TSTATE_CAPI_VERSION of the installed tstate_capi.h."""
    with open(os.path.join(tstate.get_include(), "tstate_capi.h")) as f:
        for line in f:
            if line.startswith("#define TSTATE_CAPI_VERSION "):
                return int(line.split()[2])
    raise AssertionError("tstate_capi.h defines no TSTATE_CAPI_VERSION")


@check("version")
def _():
    assert tstate.__version__ == want_version, tstate.__version__
    want = header_capi_version()
    assert tstate.CAPI_VERSION == want, (tstate.CAPI_VERSION, want)
    return f"{tstate.__version__} capi={tstate.CAPI_VERSION}"


@check("get_include")
def _():
    inc = tstate.get_include()
    for f in ("tstate_capi.h", "tstate_capi.pxd"):
        assert os.path.isfile(os.path.join(inc, f)), f
    return inc


@check("diagnostics")
def _():
    d = tstate.diagnostics()
    assert sorted(d) == ["activate", "ensure", "guard", "handle"], sorted(d)
    for design, rt in d.items():
        assert rt["backend"] == "cpython", (design, rt["backend"])
        mains = [i for i in rt["interpreters"] if i["main"]]
        assert len(mains) == 1 and mains[0]["state"] == "running", (design, rt["interpreters"])
    try:
        d["ensure"]["counters"]["open_holds"] = 5
    except TypeError:
        pass
    else:
        raise AssertionError("diagnostics are writable")
    return f"{len(d)} designs, main registered in each, read-only"


@check("exit_bound")
def _():
    tstate.set_exit_bound(0.25)
    got = [tstate.diagnostics()[k]["exit_bound_ms"] for k in ("ensure", "handle", "activate", "guard")]
    assert got == [250] * 4, got
    tstate.set_exit_bound(None)
    assert tstate.exit_bound() == 5.0, tstate.exit_bound()
    try:
        tstate.set_exit_bound(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("negative bound accepted")
    return "0.25 s set on every design, None restores 5 s"


import wheel_a  # noqa: E402
import wheel_b  # noqa: E402


@check("one_runtime")
def _():
    # a span opened through one extension is the other's to release
    h = wheel_a.handle_open()
    first = wheel_b.handle_release(h)
    again = wheel_b.handle_release(h)
    assert (first, again) == (0, -6), (first, again)
    return f"handle {h} opened by wheel_a, released by wheel_b (0), then stale (-6)"


@check("inline_path")
def _():
    # the ensure design's inline nested path through the capsule, on this
    # (attached) thread: the nested spans are counted in its inline block
    counted, left, attached = wheel_a.inline_nested(3)
    assert (counted, left, attached) == (3, 0, 1), (counted, left, attached)
    # the guard design's, under a guard kept for the call (its table entry
    # is version 3's)
    g = wheel_a.guard_inline_nested(3)
    assert g == (3, 0, 1, 0), g
    return "3 nested tse_ensure_inline and 3 tsg_ensure_inline counted in the blocks, released"


@check("missing_package")
def _():
    # without site-packages tstate cannot be imported: import_tstate() fails
    code = f"import sys; sys.path.insert(0, {ext_dir!r}); import wheel_a"
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, p.stdout
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tstate: import_tstate() could not import"), last
    assert "is the tstate package installed" in last, last
    return last


@check("model_backend_refused")
def _():
    # the package needs the CPython backend: forcing the model is refused
    env = dict(os.environ, TSTATE_BACKEND="model")
    p = subprocess.run([sys.executable, "-c", "import tstate"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0, p.stdout
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and "model backend" in last, last
    return last


@check("table_older_than_header")
def _():
    try:
        import wheel_new  # noqa: F401  (built requiring table version 999)
    except ImportError as e:
        msg = str(e)
        assert "older than this extension's tstate_capi.h" in msg, msg
        return msg
    raise AssertionError("a table older than the header was accepted")


@check("example_c")
def _():
    import callback_demo

    got = []
    rc = callback_demo.call_from_native_thread(lambda: got.append(42))
    assert (rc, got) == (0, [42]), (rc, got)
    return "callback ran on a native thread through tse_ensure"


@check("example_cython")
def _():
    import cy_callback

    got = []
    rc = cy_callback.call_from_native_thread(lambda: got.append(7))
    assert (rc, got) == (0, [7]), (rc, got)
    return "callback ran on a native thread through the Cython helper"


def run_in_subinterpreter(kind):
    try:
        import _interpreters as interp  # 3.13
    except ImportError:
        import _xxsubinterpreters as interp  # 3.9-3.12
    code = (
        "import tstate\n"
        "d = tstate.diagnostics()\n"
        f"assert tstate.CAPI_VERSION == {header_capi_version()}\n"
        "assert all(len(d[k]['interpreters']) >= 2 for k in d), d['ensure']['interpreters']\n"
    )
    if sys.version_info >= (3, 13):
        i = interp.create(kind)
    elif sys.version_info >= (3, 12):
        i = interp.create(isolated=(kind == "isolated"))
    else:
        i = interp.create()
    try:
        err = interp.run_string(i, code)
        assert err is None, err
    finally:
        interp.destroy(i)


@check("subinterpreter_legacy")
def _():
    run_in_subinterpreter("legacy")
    return "imported in a subinterpreter sharing the GIL; registered with every design"


if sys.version_info >= (3, 12):

    @check("subinterpreter_own_gil")
    def _():
        run_in_subinterpreter("isolated")
        return "imported in an isolated subinterpreter with its own GIL"
