//! Lines of C a caller writes per design, counted mechanically from the
//! facades' C programs (`conformance/c/*.c`, which the test suite compiles
//! and runs, so the counted code is known to work).
//!
//! A region runs from `/* tstate:pattern NAME */` to `/* tstate:end */`.
//! Counted: every line that is not blank, not only a comment, and not a
//! test assertion (`CHECK…`; the same body work appears in every design and
//! is asserted there, not written by a caller).

/// The C programs, by facade name.
pub const SOURCES: [(&str, &str); 4] = [
    ("ensure", include_str!("../c/ensure.c")),
    ("handle", include_str!("../c/handle.c")),
    ("activate", include_str!("../c/activate.c")),
    ("guard", include_str!("../c/guard.c")),
];

/// The patterns compared, in report order, with what each is.
pub const PATTERNS: [(&str, &str); 5] = [
    (
        "fresh-thread",
        "a native thread that never had a thread state calls in (the discussion's c_thread_func)",
    ),
    (
        "nested-call",
        "generated `with gil` that may run holding, not holding, or after releasing",
    ),
    (
        "nogil-reentry",
        "release around blocking work and come back (`with nogil:`)",
    ),
    ("pool-task", "one queued task on a native pool thread"),
    (
        "subinterpreter-callback",
        "a thread spawned from a subinterpreter calls into it",
    ),
];

/// Counted lines of `pattern` in `source`, or `None` if it has no region.
pub fn count(source: &str, pattern: &str) -> Option<usize> {
    let begin = format!("/* tstate:pattern {pattern} */");
    let mut inside = false;
    let mut found = false;
    let mut n = 0;
    for line in source.lines() {
        let t = line.trim();
        if t == begin {
            inside = true;
            found = true;
            continue;
        }
        if inside && t == "/* tstate:end */" {
            inside = false;
            continue;
        }
        if inside && counts(t) {
            n += 1;
        }
    }
    found.then_some(n)
}

fn counts(t: &str) -> bool {
    !(t.is_empty()
        || t.starts_with("//")
        || t.starts_with("/*")
        || t.starts_with('*')
        || t.starts_with("CHECK"))
}

/// The table: for each pattern, the count per facade (in `SOURCES` order).
pub fn table() -> Vec<(&'static str, Vec<Option<usize>>)> {
    PATTERNS
        .iter()
        .map(|(p, _)| (*p, SOURCES.iter().map(|(_, s)| count(s, p)).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_rules() {
        let src = "x\n/* tstate:pattern p */\n  a();\n\n  // c\n  /* c */\n  CHECK(x);\n  }\n/* tstate:end */\ny\n";
        assert_eq!(count(src, "p"), Some(2));
        assert_eq!(count(src, "q"), None);
    }

    #[test]
    fn every_program_has_every_pattern() {
        for (p, counts) in table() {
            for ((f, _), c) in SOURCES.iter().zip(counts) {
                assert!(c.is_some_and(|n| n > 0), "{f}.c lacks pattern {p}");
            }
        }
    }
}
