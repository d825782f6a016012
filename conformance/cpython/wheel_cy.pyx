# cython: language_level=3
"""wheel_cy -- the exit race in Cython, through the `tstate` package's C API.

Built by conformance/src/wheel.rs: cythonized once (include path:
tstate.get_include(), for tstate_capi.pxd), then compiled with gcc per
CPython. start(callable, nthreads) starts native pthreads; each calls the
callable through `tstate_attached` (tstate_capi.pxd: the `with gil:` of a
thread Python did not create, on the ensure design) until it is refused. A C atexit handler
waits up to 500 ms for the threads to settle and prints the same
EXITRACE line as exitrace_ext.c (killed threads cannot be told apart from
stuck ones here: both are counted "running"; settle_us is approximate).
"""

from libc.stdint cimport uint64_t
from libc.stdio cimport printf, fflush, stdout
from libc.stdlib cimport atexit
from posix.unistd cimport usleep
from tstate_capi cimport *

cdef extern from "pthread.h" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, const void *attr,
                       void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_detach(pthread_t thread)

cdef extern from *:
    """
    static inline void wcy_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int wcy_load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void wcy_add(long *p, long v) { __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
    static inline long wcy_loadl(long *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    """
    void wcy_store(int *p, int v) nogil
    int wcy_load(int *p) nogil
    void wcy_add(long *p, long v) nogil
    long wcy_loadl(long *p) nogil

import_tstate()

# -- the exit race -----------------------------------------------------------

cdef enum:
    MAX_THREADS = 64

cdef enum:
    T_STARTING = 0
    T_RUNNING
    T_REFUSED
    T_FINISHED
    T_KILLED
    T_FAILED

cdef int states[MAX_THREADS]
cdef int codes[MAX_THREADS]
cdef long calls[MAX_THREADS]
cdef long pyerrors
cdef int nthreads = 0
cdef uint64_t interp_id = 0
cdef object to_call = None

cdef int call_python(void *arg) noexcept:
    try:
        (<object>arg)()
        return 0
    except BaseException:
        return 1

cdef void *worker(void *arg) noexcept nogil:
    cdef long i = <long>arg
    cdef int r
    wcy_store(&states[i], T_RUNNING)
    while True:
        r = tstate_attached(interp_id, <tstate_body>call_python, <void *>to_call)
        if r == TSE_ERR_FINALIZING or r == TSE_ERR_NO_SUCH_INTERPRETER:
            wcy_store(&codes[i], r)
            wcy_store(&states[i], T_REFUSED)
            return NULL
        if r < 0:
            wcy_store(&codes[i], r)
            wcy_store(&states[i], T_FAILED)
            return NULL
        if r == 1:
            wcy_add(&pyerrors, 1)
        wcy_add(&calls[i], 1)

cdef void report_at_exit() noexcept nogil:
    cdef int refused = 0, finished = 0, running = 0, failed = 0, rf = 0, rg = 0, st, k
    cdef int waited = 0, unsettled = 1
    cdef long total = 0
    # let threads that are between a refusal and recording it settle (up to
    # 500 ms, as exitrace_ext.c does)
    while unsettled and waited < 500:
        unsettled = 0
        for k in range(nthreads):
            st = wcy_load(&states[k])
            if st == T_STARTING or st == T_RUNNING:
                unsettled = 1
        if unsettled:
            usleep(1000)
            waited += 1
    for k in range(nthreads):
        total += wcy_loadl(&calls[k])
        st = wcy_load(&states[k])
        if st == T_REFUSED:
            refused += 1
            if wcy_load(&codes[k]) == TSE_ERR_FINALIZING:
                rf += 1
            else:
                rg += 1
        elif st == T_FINISHED:
            finished += 1
        elif st == T_FAILED:
            failed += 1
        else:
            running += 1
    printf(b"EXITRACE design=cython-ensure py=%d.%d threads=%d refused=%d killed=0 "
           b"finished=%d running=%d failed=%d calls=%ld pyerrors=%ld "
           b"refused_finalizing=%d refused_gone=%d settle_us=%d module=wheel_cy\n",
           PY_MAJOR, PY_MINOR, nthreads, refused, finished, running, failed, total,
           wcy_loadl(&pyerrors), rf, rg, waited * 1000)
    fflush(stdout)

cdef extern from "Python.h":
    enum:
        PY_MAJOR "PY_MAJOR_VERSION"
        PY_MINOR "PY_MINOR_VERSION"

def start(callable, int n):
    """start(callable, n): n native threads calling `callable` until refused."""
    global nthreads, interp_id, to_call
    if nthreads:
        raise RuntimeError("start: already started")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError("start: 1 to 64 threads")
    cdef int rc = tse_current_interpreter(&interp_id)
    if rc != 0:
        raise RuntimeError(tse_error_message(rc).decode())
    to_call = callable  # kept for the threads; never released
    if atexit(report_at_exit) != 0:
        raise OSError("atexit() failed")
    cdef pthread_t th
    cdef long i
    for i in range(n):
        if pthread_create(&th, NULL, worker, <void *>i) != 0:
            raise OSError("pthread_create failed")
        pthread_detach(th)
        nthreads += 1

def min_calls():
    """The fewest calls any started thread has made."""
    if nthreads == 0:
        return 0
    return min(wcy_loadl(&calls[k]) for k in range(nthreads))
