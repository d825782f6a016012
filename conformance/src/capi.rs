//! The `tstate` Python package's C API, generated from the facades' own
//! cbindgen headers so that it cannot drift from them:
//!
//! * `python/py/tstate/include/tstate_capi.h`: every facade's types and
//!   constants, the table `TstateCApi` (a version, its size, then one
//!   typed pointer per function), `import_tstate()`, and a `static inline`
//!   wrapper per function with the facade's own name and doc comment; the
//!   discussion's and PEP 788's spellings opt-in as in the facade headers;
//! * `python/src/capi_table.rs`: the same functions, in the same order, as
//!   the table the native module puts in its capsule;
//! * `python/py/tstate/include/tstate_capi.pxd`: the same declarations for
//!   Cython.
//!
//! `conformance/tests/generated.rs` checks the three committed files
//! against [`render`] (`TSTATE_BLESS=1` rewrites them).

use std::fmt::Write as _;

/// The table's version: raise it whenever a function is appended (the
/// table is append-only; `import_tstate()` refuses a table whose version
/// or size is below the header's).
pub const CAPI_VERSION: u32 = 3;

/// Functions appended to the table after its first version, in the order
/// they were appended: (C name, the table version that added it). The
/// table lists every other function in header order, then these, so that
/// an older extension's offsets stay valid.
pub const APPENDED: [(&str, u32); 4] = [
    ("tse_inline_state", 2),
    ("tsh_inline_state", 2),
    ("tsa_inline_state", 2),
    ("tsg_inline_state", 3),
];

/// The table's entries in order: (design, function).
fn table_order(headers: &[Header]) -> Vec<(&str, &Proto)> {
    let appended = |p: &Proto| APPENDED.iter().position(|(n, _)| *n == p.name);
    let mut first: Vec<(&str, &Proto)> = Vec::new();
    let mut later: Vec<(usize, &str, &Proto)> = Vec::new();
    for hd in headers {
        for p in &hd.protos {
            match appended(p) {
                Some(i) => later.push((i, hd.design.as_str(), p)),
                None => first.push((hd.design.as_str(), p)),
            }
        }
    }
    later.sort_by_key(|&(i, _, _)| i);
    first.extend(later.into_iter().map(|(_, d, p)| (d, p)));
    first
}

/// The facades, in table order: (design, C prefix).
pub const FACADES: [(&str, &str); 4] = [
    ("ensure", "tse"),
    ("handle", "tsh"),
    ("activate", "tsa"),
    ("guard", "tsg"),
];

/// One C function of a facade header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proto {
    /// Its doc comment, as cbindgen wrote it (`/** … */`), or empty.
    pub doc: String,
    /// The return type (`int`, `struct TSG_Guard *`, `void`).
    pub ret: String,
    /// The function's name.
    pub name: String,
    /// `(type, name)` per parameter; empty for `(void)`.
    pub params: Vec<(String, String)>,
}

/// A facade header, cut into its parts.
#[derive(Debug, Clone)]
pub struct Header {
    /// The design (`"ensure"`).
    pub design: String,
    /// The C prefix (`"tse"`).
    pub prefix: String,
    /// Constants and types: everything between the includes and the
    /// `extern "C"` block.
    pub types: String,
    /// The functions, in header order.
    pub protos: Vec<Proto>,
    /// The opt-in spellings block after the include guard.
    pub spellings: String,
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Result<&'a str, String> {
    let i = s
        .find(start)
        .ok_or_else(|| format!("marker {start:?} not found"))?
        + start.len();
    let j = s[i..]
        .find(end)
        .ok_or_else(|| format!("marker {end:?} not found"))?;
    Ok(&s[i..i + j])
}

/// Cuts a cbindgen header of design `design` (prefix `prefix`) into its
/// parts.
pub fn parse(design: &str, prefix: &str, text: &str) -> Result<Header, String> {
    let types = between(
        text,
        "#include <stddef.h>\n",
        "#ifdef __cplusplus\nextern \"C\" {",
    )?;
    let body = between(
        text,
        "extern \"C\" {\n#endif // __cplusplus\n",
        "#ifdef __cplusplus\n}  // extern \"C\"",
    )?;
    let guard_end = format!("#endif  /* TSTATE_{}_H */\n", design.to_ascii_uppercase());
    let spellings = text
        .split_once(&guard_end)
        .map(|(_, s)| s.trim().to_string())
        .ok_or_else(|| format!("{guard_end:?} not found"))?;
    let mut protos = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let mut doc = String::new();
        if rest.starts_with("/**") {
            let end = rest.find("*/").ok_or("unterminated comment")? + 2;
            doc = rest[..end].to_string();
            rest = rest[end..].trim_start();
        }
        let end = rest.find(';').ok_or("prototype without ';'")?;
        protos.push(parse_proto(doc, &rest[..end])?);
        rest = &rest[end + 1..];
    }
    Ok(Header {
        design: design.to_string(),
        prefix: prefix.to_string(),
        types: types.trim().to_string(),
        protos,
        spellings,
    })
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `"struct X *name"` into `("struct X *", "name")`.
fn split_decl(decl: &str) -> Result<(String, String), String> {
    let decl = squash(decl);
    let at = decl
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let (ty, name) = decl.split_at(at);
    if name.is_empty() || ty.trim().is_empty() {
        return Err(format!("cannot split declaration {decl:?}"));
    }
    let ty = ty.trim_end();
    let ty = if ty.ends_with('*') {
        ty.to_string()
    } else {
        format!("{ty} ")
    };
    Ok((ty, name.to_string()))
}

fn parse_proto(doc: String, text: &str) -> Result<Proto, String> {
    let text = squash(text);
    let open = text
        .find('(')
        .ok_or_else(|| format!("no '(' in {text:?}"))?;
    let close = text
        .rfind(')')
        .ok_or_else(|| format!("no ')' in {text:?}"))?;
    let (ret, name) = split_decl(&text[..open])?;
    let inner = text[open + 1..close].trim();
    let params = if inner == "void" {
        Vec::new()
    } else {
        inner
            .split(',')
            .map(split_decl)
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Proto {
        doc,
        ret,
        name,
        params,
    })
}

impl Proto {
    fn c_params(&self) -> String {
        if self.params.is_empty() {
            return "void".into();
        }
        self.params
            .iter()
            .map(|(t, n)| format!("{t}{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn args(&self) -> String {
        self.params
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What the wrapper returns when `import_tstate()` has not succeeded.
    fn unimported(&self, prefix: &str) -> Option<String> {
        let ret = self.ret.trim();
        if ret == "void" {
            None
        } else if ret.ends_with('*') || ret.ends_with("FatalHook") {
            Some(if ret.contains("char") {
                "\"tstate: import_tstate() has not succeeded in this extension\"".into()
            } else {
                "NULL".into()
            })
        } else if ret == "int" {
            Some(format!("{}_ERR_UNSUPPORTED", prefix.to_ascii_uppercase()))
        } else {
            Some("0".into())
        }
    }
}

const GENERATED: &str = "GENERATED by cbindgen: the four facade headers (ffi-<design>/include, made by\n * cbindgen from ffi-<design>/src), reassembled by conformance/src/capi.rs -- do not edit.\n * Regenerate: TSTATE_BLESS=1 cargo test -p tstate-conformance --test generated";

/// The three files: (`tstate_capi.h`, `capi_table.rs`, `tstate_capi.pxd`).
pub fn render(headers: &[Header]) -> (String, String, String) {
    (
        render_header(headers),
        render_table(headers),
        render_pxd(headers),
    )
}

fn render_header(headers: &[Header]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"/* tstate_capi.h -- the C API of the `tstate` Python package, for extensions.
 * {GENERATED}
 *
 * One runtime per process: `pip install tstate` provides the native module
 * `tstate._tstate`, which links the four designs once and hands their
 * functions to every extension through the capsule `tstate._tstate._C_API`
 * (as NumPy's `import_array()` does). An extension includes this header
 * (directory: `tstate.get_include()`) instead of the facade headers, links
 * nothing, and calls `import_tstate()` in its module init:
 *
 *     if (import_tstate() < 0) return NULL;     // or -1 in an exec slot
 *
 * It fails with ImportError when `tstate` is not installed, and when the
 * installed table is older (lower version, smaller) than this header. Each
 * wrapper below has the facade's name, prototype and contract; before a
 * successful `import_tstate()` it does nothing and returns the design's
 * `*_ERR_UNSUPPORTED` (int), NULL (pointers) or nothing (void).
 *
 * The table pointer is `static` in each translation unit that includes this
 * header; for an extension of several files, define
 * `TSTATE_CAPI_UNIQUE_SYMBOL` to one name in every file, and
 * `TSTATE_CAPI_NO_IMPORT` in all but the one that calls `import_tstate()`
 * (NumPy's `PY_ARRAY_UNIQUE_SYMBOL` / `NO_IMPORT_ARRAY`).
 *
 * The discussion's and PEP 788's spellings are opt-in, one design per file,
 * as in the facade headers: TSTATE_ENSURE_DISCUSSION_NAMES,
 * TSTATE_HANDLE_DISCUSSION_NAMES, TSTATE_ACTIVATE_DISCUSSION_NAMES,
 * TSTATE_GUARD_PEP788_NAMES. Requires Python.h (it is included here). */

#ifndef TSTATE_CAPI_H
#define TSTATE_CAPI_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#if defined(TSTATE_ENSURE_H) || defined(TSTATE_HANDLE_H) || defined(TSTATE_ACTIVATE_H) || defined(TSTATE_GUARD_H)
#error "tstate_capi.h replaces the facade headers (tstate_ensure.h, ...): include one or the other"
#endif

/* The table version this header was generated with. */
#define TSTATE_CAPI_VERSION {CAPI_VERSION}
/* The capsule's full name. */
#define TSTATE_CAPI_CAPSULE "tstate._tstate._C_API"
/* The table version the extension requires (default: this header's);
 * define it higher to refuse older installations of tstate. */
#ifndef TSTATE_CAPI_REQUIRED_VERSION
#define TSTATE_CAPI_REQUIRED_VERSION TSTATE_CAPI_VERSION
#endif

"#
    );
    for hd in headers {
        let _ = writeln!(
            h,
            "/* ---- the {} design ({}_*): constants and types ---- */\n\n{}\n",
            hd.design, hd.prefix, hd.types
        );
    }
    h.push_str(
        "/* The capsule's table: a version and its size, then every function. */\n\
         typedef struct TstateCApi {\n  uint32_t version;\n  uint32_t size;\n",
    );
    for (_, p) in table_order(headers) {
        let _ = writeln!(h, "  {}(*{})({});", p.ret, p.name, p.c_params());
    }
    h.push_str("} TstateCApi;\n\n");
    h.push_str(
        r#"#ifdef __cplusplus
extern "C" {
#endif

#if defined(TSTATE_CAPI_UNIQUE_SYMBOL)
#define TSTATE_CAPI_TABLE TSTATE_CAPI_UNIQUE_SYMBOL
#if defined(TSTATE_CAPI_NO_IMPORT)
extern const TstateCApi *TSTATE_CAPI_TABLE;
#else
const TstateCApi *TSTATE_CAPI_TABLE = NULL;
#endif
#else
#define TSTATE_CAPI_TABLE tstate_capi_table_
static const TstateCApi *tstate_capi_table_ = NULL;
#endif

#if !defined(TSTATE_CAPI_NO_IMPORT)
/* Imports the table: 0, or -1 with ImportError set (tstate missing, or its
 * table older than this header). Call it with the GIL held, in module
 * init; it is idempotent. */
static inline int tstate_capi_import(void) {
  const TstateCApi *t = (const TstateCApi *)PyCapsule_Import(TSTATE_CAPI_CAPSULE, 0);
  if (t == NULL) {
    if (PyErr_ExceptionMatches(PyExc_ImportError)) {
      /* say what is missing, keeping CPython's words */
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyObject *why = value ? PyObject_Str(value) : NULL;
      PyErr_Format(PyExc_ImportError,
                   "tstate: import_tstate() could not import " TSTATE_CAPI_CAPSULE
                   " (%S); is the tstate package installed in this environment?",
                   why ? why : Py_None);
      Py_XDECREF(why);
      Py_XDECREF(type);
      Py_XDECREF(value);
      Py_XDECREF(tb);
    }
    return -1;
  }
  if (t->version < TSTATE_CAPI_REQUIRED_VERSION || t->size < (uint32_t)sizeof(TstateCApi)) {
    PyErr_Format(PyExc_ImportError,
                 "tstate: the installed tstate's C API table (version %u, %u bytes) is older "
                 "than this extension's tstate_capi.h (version %u, %u bytes); upgrade tstate",
                 (unsigned)t->version, (unsigned)t->size, (unsigned)TSTATE_CAPI_REQUIRED_VERSION,
                 (unsigned)sizeof(TstateCApi));
    return -1;
  }
  TSTATE_CAPI_TABLE = t;
  return 0;
}
#define import_tstate() tstate_capi_import()
#endif

"#,
    );
    for hd in headers {
        let _ = writeln!(h, "/* ---- the {} design: functions ---- */\n", hd.design);
        for p in &hd.protos {
            if !p.doc.is_empty() {
                h.push_str(&p.doc);
                h.push('\n');
            }
            let _ = writeln!(h, "static inline {}{}({}) {{", p.ret, p.name, p.c_params());
            let call = format!("TSTATE_CAPI_TABLE->{}({})", p.name, p.args());
            match p.unimported(&hd.prefix) {
                Some(v) => {
                    let _ = writeln!(h, "  if (TSTATE_CAPI_TABLE == NULL)\n    return {v};");
                    let _ = writeln!(h, "  return {call};\n}}\n");
                }
                None => {
                    let _ = writeln!(
                        h,
                        "  if (TSTATE_CAPI_TABLE == NULL)\n    return;\n  {call};\n}}\n"
                    );
                }
            }
        }
    }
    h.push_str("#ifdef __cplusplus\n}  // extern \"C\"\n#endif\n\n#endif /* TSTATE_CAPI_H */\n");
    for hd in headers {
        let _ = write!(h, "\n{}\n", hd.spellings);
    }
    h
}

fn render_table(headers: &[Header]) -> String {
    let n: usize = headers.iter().map(|h| h.protos.len()).sum();
    let mut s = format!(
        "// {}\n\n//! The capsule's table (see `Table`), in `tstate_capi.h`'s order.\n\n\
         use crate::{{FnPtr, Table}};\nuse std::ffi::c_void;\n\n\
         /// `TSTATE_CAPI_VERSION` of the header generated with this table.\n\
         pub const CAPI_VERSION: u32 = {CAPI_VERSION};\n\n\
         /// How many functions the table holds.\n\
         pub const FUNCTIONS: usize = {n};\n\n\
         /// The table the capsule points to.\n\
         pub static TABLE: Table = Table {{\n    version: CAPI_VERSION,\n    \
         size: std::mem::size_of::<Table>() as u32,\n    functions: [\n",
        GENERATED.replace("\n * ", "\n// ")
    );
    for (design, p) in table_order(headers) {
        let _ = writeln!(
            s,
            "        FnPtr(tstate_ffi_{design}::{} as *const c_void),",
            p.name
        );
    }
    s.push_str("    ],\n};\n");
    s
}

/// A C type in Cython's spelling (no `struct` keyword).
fn cy_type(t: &str) -> String {
    t.replace("struct ", "")
}

fn cy_params(p: &Proto) -> String {
    p.params
        .iter()
        .map(|(t, n)| format!("{}{n}", cy_type(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Cython declarations of one header's constants and types.
fn cy_types(out: &mut String, types: &str) {
    let mut lines = types.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("#define ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            let _ = writeln!(out, "    enum: {name}");
        } else if let Some(rest) = line.strip_prefix("typedef struct ") {
            if let Some(name) = rest.strip_suffix(';') {
                // opaque: `typedef struct X X;`
                let name = name.split_whitespace().next().unwrap_or_default();
                let _ = writeln!(out, "    ctypedef struct {name}:\n        pass");
            } else {
                let name = rest.trim_end_matches(" {");
                let _ = writeln!(out, "    ctypedef struct {name}:");
                for field in lines.by_ref() {
                    let f = field.trim();
                    if f.starts_with('}') {
                        break;
                    }
                    if f.ends_with(';') && !f.starts_with("/*") && !f.starts_with('*') {
                        // Cython spells a function pointer of no argument `()`
                        let f = cy_type(f.trim_end_matches(';')).replace("(void)", "()");
                        let _ = writeln!(out, "        {f}");
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("typedef ") {
            let _ = writeln!(out, "    ctypedef {}", rest.trim_end_matches(';'));
        }
    }
}

/// The Cython helper every `.pyx` can use: the `with gil:` of a thread
/// Python did not create (fixed text, after the declarations).
const PXD_HELPER: &str = r#"
# ---- a `with gil:`-style helper --------------------------------------------

ctypedef int (*tstate_body)(void *arg) noexcept nogil

cdef inline int tstate_attached(uint64_t interp, tstate_body body, void *arg) noexcept nogil:
    # Runs body(arg) attached to `interp` through the ensure design, on any
    # thread (one Python did not create included): body's result, or the
    # negative TSE_ERR_* code of the refusal (TSE_ERR_FINALIZING,
    # TSE_ERR_NO_SUCH_INTERPRETER, TSE_ERR_NO_MEMORY), in which case body
    # did not run. A nested call (the thread attached to `interp` through
    # the package already) takes the header's inline path
    # (tse_ensure_ex_inline: no call into the library). The body is a
    # GIL-requiring `cdef int f(void *) noexcept` cast to tstate_body:
    # Cython warns that the cast circumvents its GIL check, which is sound
    # here because body runs only between tse_ensure_ex_inline and
    # tse_release_inline.
    cdef TSE_Error err
    if tse_ensure_ex_inline(interp, &err) < 0:
        return err.code
    cdef int r = body(arg)
    tse_release_inline()
    return r
"#;

fn render_pxd(headers: &[Header]) -> String {
    let mut s = format!(
        "# tstate_capi.pxd -- the C API of the `tstate` Python package, for Cython.\n\
         # {}\n#\n\
         # Put tstate.get_include() on Cython's include path and the C compiler's,\n\
         # then `from tstate_capi cimport *` and call import_tstate() at module level.\n\
         # Every function is declared nogil: they are meant for threads that do not\n\
         # hold the GIL (see docs/python.md for a `with gil`-style helper).\n\n\
         from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t\n\n\
         cdef extern from \"tstate_capi.h\":\n    \
         enum: TSTATE_CAPI_VERSION\n    \
         int import_tstate() except -1\n\n\
         cdef extern from \"tstate_capi.h\" nogil:\n",
        GENERATED.replace("\n * ", "\n# ")
    );
    for hd in headers {
        let _ = writeln!(s, "    # ---- the {} design ----", hd.design);
        cy_types(&mut s, &hd.types);
        for p in hd.protos.iter().chain(&inline_protos(&hd.spellings)) {
            let _ = writeln!(s, "    {}{}({})", cy_type(&p.ret), p.name, cy_params(p));
        }
        s.push('\n');
    }
    s.push_str(PXD_HELPER);
    s
}

/// The `static inline` functions a header's trailer offers (`*_inline`:
/// the inline nested paths), each once (the trailer defines each twice:
/// the inline path, and the plain call without it); the trailer's own
/// helpers (names ending in `_`) are not for callers.
fn inline_protos(trailer: &str) -> Vec<Proto> {
    let mut out: Vec<Proto> = Vec::new();
    for line in trailer.lines() {
        let Some(rest) = line.strip_prefix("static inline ") else {
            continue;
        };
        let Some(close) = rest.find(')') else {
            continue;
        };
        let Ok(p) = parse_proto(String::new(), &rest[..=close]) else {
            continue;
        };
        if p.name.ends_with("_inline") && !out.iter().any(|o| o.name == p.name) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prototypes_split_into_types_and_names() {
        let p = parse_proto(
            String::new(),
            "int tsg_finalize_report(uint64_t interp,\n   struct TSG_Holder *buf, size_t *count)",
        )
        .unwrap();
        assert_eq!(p.ret, "int ");
        assert_eq!(p.name, "tsg_finalize_report");
        assert_eq!(
            p.params,
            vec![
                ("uint64_t ".into(), "interp".into()),
                ("struct TSG_Holder *".into(), "buf".into()),
                ("size_t *".into(), "count".into()),
            ]
        );
        let v = parse_proto(String::new(), "struct TSG_View *tsg_view_from_main(void)").unwrap();
        let inl = inline_protos(
            "static inline void tsh_inline_adopt_(void) {\n\
             static inline int tsh_ensure_inline(uint64_t interp, const char **errmsg) {\n\
             static inline int tsh_ensure_inline(uint64_t interp, const char **errmsg) { return 0; }\n",
        );
        assert_eq!(inl.len(), 1, "each once, helpers left out");
        assert_eq!(
            (inl[0].name.as_str(), inl[0].params.len()),
            ("tsh_ensure_inline", 2)
        );
        assert_eq!((v.ret.as_str(), v.params.len()), ("struct TSG_View *", 0));
        assert_eq!(v.unimported("tsg").as_deref(), Some("NULL"));
        assert!(parse_proto(String::new(), "int (void)").is_err());
    }
}
