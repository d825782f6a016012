/* The start of a test program that runs on the model and, built as an
 * embedder of CPython (Python.h on the include path: conformance/tests/
 * c_programs.rs builds it both ways), on CPython. Include it first: it
 * defines ON_CPYTHON in the second case, includes check.h, and offers
 * TSTATE_ON_THREAD and TSTATE_DUAL_MAIN. */
#ifndef TSTATE_DUAL_MAIN_H
#define TSTATE_DUAL_MAIN_H

#if defined(__has_include)
#if __has_include(<Python.h>)
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define ON_CPYTHON 1
#endif
#endif
#include "check.h"

#ifdef ON_CPYTHON
#define TSTATE_DUAL_PY_INIT() Py_InitializeEx(0)
#define TSTATE_DUAL_PY_SAVE() PyThreadState *tstate_dual_main_ = PyEval_SaveThread()
#define TSTATE_DUAL_PY_END(rc)                                                 \
    do {                                                                       \
        PyEval_RestoreThread(tstate_dual_main_);                               \
        if (Py_FinalizeEx() < 0)                                               \
            (rc) = 1;                                                          \
    } while (0)
#else
#define TSTATE_DUAL_PY_INIT() ((void)0)
#define TSTATE_DUAL_PY_SAVE() ((void)0)
#define TSTATE_DUAL_PY_END(rc) ((void)(rc))
#endif

/* scenario_<fn>(): runs fn(NULL) on a new native thread. */
#define TSTATE_ON_THREAD(fn)                                                   \
    static void scenario_##fn(void) { run_on_native_thread(fn, NULL); }

/* main(): initializes CPython if built as an embedder, then facade P;
 * stores P's main interpreter in `m` (a static uint64_t of the program);
 * on CPython releases the GIL (the scenarios attach from native threads);
 * runs the scenario of `list` that argv[1] names (or lists them); on
 * CPython finalizes it. Needs TSTATE_HELPERS(P). */
#define TSTATE_DUAL_MAIN(P, list)                                              \
    int main(int argc, char **argv) {                                          \
        (void)new_interp; /* helpers a program may not need */                 \
        (void)work_count;                                                      \
        (void)is_attached_anywhere;                                            \
        TSTATE_DUAL_PY_INIT();                                                 \
        CHECK_EQ(P##_initialize(), 0);                                         \
        m = main_interp();                                                     \
        TSTATE_DUAL_PY_SAVE();                                                 \
        int rc = run_scenario(list, (int)(sizeof list / sizeof list[0]),       \
                              argc, argv);                                     \
        TSTATE_DUAL_PY_END(rc);                                                \
        return rc;                                                             \
    }

#endif /* TSTATE_DUAL_MAIN_H */
