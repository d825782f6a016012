# cython: language_level=3
# cy_callback.pyx -- a Cython extension that calls Python back from a native
# thread through the `tstate` package's C API (README: "Using tstate from a
# C extension"; built and run on every CPython found by
# conformance/tests/readme_python.rs and conformance/tests/wheel.rs):
#   cython -I "$(python -c 'import tstate; print(tstate.get_include())')" cy_callback.pyx
#   gcc -shared -fPIC -I<Python.h's directory> -I<the same include directory> \
#       cy_callback.c -o cy_callback$(python3-config --extension-suffix) -lpthread
from libc.stdint cimport uint64_t

cdef extern from "pthread.h" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *th, const void *attr, void *(*f)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t th, void **ret)

cdef uint64_t interp_id = 0
cdef int result = 0

from tstate_capi cimport *
import_tstate()  # ImportError: tstate missing or too old

cdef int call(void *fn) noexcept:  # runs attached: a plain GIL-holding function
    try:
        (<object>fn)()
        return 0
    except BaseException:
        return 1

cdef void *thread_main(void *fn) noexcept nogil:  # a thread Python did not create
    global result
    result = tstate_attached(interp_id, <tstate_body>call, fn)  # < 0: refused, call did not run
    return NULL

def call_from_native_thread(fn):
    """fn() on a new native thread: 0, 1 if fn raised, or the refusal's code."""
    cdef pthread_t th
    cdef int err
    if tse_current_interpreter(&interp_id) != 0:
        raise RuntimeError("tstate: not attached")
    with nogil:
        err = pthread_create(&th, NULL, thread_main, <void *>fn)
        if err == 0:
            pthread_join(th, NULL)
    if err != 0:
        raise OSError(err, "pthread_create failed")
    return result
