//! Running the suite for the comparison, and rendering it: terminal text,
//! markdown (`docs/comparison.md`), JSON.

use crate::bench::Measurement;
use crate::boilerplate;
use crate::facade::Facade;
use crate::runner::{Outcome, run_case};
use std::fmt::Write;

/// One facade's verdicts, in case-list order.
pub struct FacadeRun {
    /// Short name.
    pub name: &'static str,
    /// The design, in words.
    pub title: &'static str,
    /// (case, verdict).
    pub outcomes: Vec<(&'static str, Outcome)>,
}

impl FacadeRun {
    /// (pass, fail, n/a).
    pub fn totals(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for (_, o) in &self.outcomes {
            match o {
                Outcome::Pass => t.0 += 1,
                Outcome::Fail(_) => t.1 += 1,
                Outcome::NotApplicable(_) => t.2 += 1,
            }
        }
        t
    }
}

/// Everything the comparison prints.
pub struct Report {
    /// Per facade.
    pub facades: Vec<FacadeRun>,
    /// Timings, if measured.
    pub timings: Option<Vec<Measurement>>,
    /// Timing configuration, in words.
    pub timing_method: String,
}

impl Report {
    /// Whether any applicable case failed.
    pub fn any_failed(&self) -> bool {
        self.facades.iter().any(|f| f.totals().1 > 0)
    }
}

/// Runs every case whose name contains `filter` for facade `F`;
/// `progress(case)` is called before each.
pub fn run_suite<F: Facade>(filter: Option<&str>, progress: &mut dyn FnMut(&str)) -> FacadeRun {
    let outcomes = crate::cases::all::<F>()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .map(|c| {
            progress(c.name);
            (c.name, run_case::<F>(&c))
        })
        .collect();
    FacadeRun {
        name: F::NAME,
        title: F::TITLE,
        outcomes,
    }
}

fn cell(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail(_) => "FAIL",
        Outcome::NotApplicable(_) => "n/a",
    }
}

fn case_names(r: &Report) -> Vec<&'static str> {
    r.facades
        .first()
        .map(|f| f.outcomes.iter().map(|(c, _)| *c).collect())
        .unwrap_or_default()
}

/// The reasons for every FAIL and n/a: (facade, case, kind, reason).
fn reasons(r: &Report) -> Vec<(&str, &str, &str, String)> {
    let mut v = Vec::new();
    for f in &r.facades {
        for (c, o) in &f.outcomes {
            match o {
                Outcome::Fail(m) => v.push((f.name, *c, "FAIL", m.clone())),
                Outcome::NotApplicable(why) => v.push((f.name, *c, "n/a", why.to_string())),
                Outcome::Pass => {}
            }
        }
    }
    v
}

/// Boilerplate rows restricted to the facades in the report.
fn boilerplate_rows(r: &Report) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let cols: Vec<usize> = r
        .facades
        .iter()
        .filter_map(|f| boilerplate::SOURCES.iter().position(|(n, _)| *n == f.name))
        .collect();
    boilerplate::table()
        .into_iter()
        .zip(boilerplate::PATTERNS)
        .map(|((p, counts), (_, what))| {
            let cells = cols
                .iter()
                .map(|&i| counts[i].map_or("-".into(), |n| n.to_string()))
                .collect();
            (p, what, cells)
        })
        .collect()
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The conformance part in markdown: matrix, totals, reasons, boilerplate.
/// (Deterministic: `docs/comparison.md` is checked against it.)
pub fn conformance_markdown(r: &Report) -> String {
    let mut s = String::new();
    let names: Vec<&str> = r.facades.iter().map(|f| f.name).collect();
    writeln!(s, "## Conformance matrix\n").unwrap();
    writeln!(s, "| case | {} |", names.join(" | ")).unwrap();
    writeln!(s, "|---|{}", ":-:|".repeat(names.len())).unwrap();
    for (i, c) in case_names(r).iter().enumerate() {
        let cells: Vec<&str> = r.facades.iter().map(|f| cell(&f.outcomes[i].1)).collect();
        writeln!(s, "| `{c}` | {} |", cells.join(" | ")).unwrap();
    }
    let totals: Vec<String> = r
        .facades
        .iter()
        .map(|f| {
            let (p, x, n) = f.totals();
            format!("{p} / {x} / {n}")
        })
        .collect();
    writeln!(s, "| **pass / FAIL / n/a** | {} |\n", totals.join(" | ")).unwrap();
    let rs = reasons(r);
    if !rs.is_empty() {
        writeln!(s, "### Reasons for every FAIL and n/a\n").unwrap();
        writeln!(s, "| design | case | verdict | reason |\n|---|---|---|---|").unwrap();
        for (f, c, k, why) in rs {
            writeln!(s, "| {f} | `{c}` | {k} | {} |", md_escape(&why)).unwrap();
        }
        writeln!(s).unwrap();
    }
    writeln!(s, "## Boilerplate: lines of C a caller writes\n").unwrap();
    writeln!(
        s,
        "Counted from the marked regions of `conformance/c/<design>.c` (programs the tests build and run): non-blank lines, not comments, not test assertions.\n"
    )
    .unwrap();
    writeln!(s, "| pattern | what | {} |", names.join(" | ")).unwrap();
    writeln!(s, "|---|---|{}", "--:|".repeat(names.len())).unwrap();
    for (p, what, cells) in boilerplate_rows(r) {
        writeln!(s, "| {p} | {} | {} |", md_escape(what), cells.join(" | ")).unwrap();
    }
    s
}

/// The timing part in markdown.
pub fn timing_markdown(r: &Report) -> String {
    let mut s = String::new();
    let Some(ms) = &r.timings else {
        return s;
    };
    writeln!(s, "## Timing\n\n{}\n", r.timing_method).unwrap();
    writeln!(
        s,
        "| design | case | one operation | median ns | min | max | × mutex pair |\n|---|:-:|---|--:|--:|--:|--:|"
    )
    .unwrap();
    for m in ms {
        writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            m.facade, m.case, m.what, m.median_ns, m.min_ns, m.max_ns, m.ratio
        )
        .unwrap();
    }
    s
}

/// Markers around the checked part of `docs/comparison.md`.
pub const BEGIN: &str = "<!-- tstate:conformance:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- tstate:conformance:end -->";

/// The whole markdown document.
pub fn markdown(r: &Report) -> String {
    format!(
        "# tstate: the designs compared\n\nGenerated by `cargo run --release -p tstate-conformance -- --markdown > docs/comparison.md`; do not edit. The conformance part is checked by `conformance/tests/comparison_doc.rs`; the timing part is from the run that wrote this file.\n\nDesigns: {}.\n\n{BEGIN}\n{}{END}\n\n{}",
        r.facades
            .iter()
            .map(|f| format!("**{}** ({})", f.name, f.title))
            .collect::<Vec<_>>()
            .join(", "),
        conformance_markdown(r),
        timing_markdown(r)
    )
}

/// Plain text for a terminal.
pub fn terminal(r: &Report) -> String {
    let mut s = String::new();
    let names: Vec<&str> = r.facades.iter().map(|f| f.name).collect();
    let cases = case_names(r);
    let w = cases.iter().map(|c| c.len()).max().unwrap_or(4).max(4);
    writeln!(s, "CONFORMANCE (case × design)\n").unwrap();
    write!(s, "{:w$}", "case").unwrap();
    for n in &names {
        write!(s, "  {n:>9}").unwrap();
    }
    writeln!(s).unwrap();
    for (i, c) in cases.iter().enumerate() {
        write!(s, "{c:w$}").unwrap();
        for f in &r.facades {
            write!(s, "  {:>9}", cell(&f.outcomes[i].1)).unwrap();
        }
        writeln!(s).unwrap();
    }
    write!(s, "{:w$}", "pass/FAIL/n-a").unwrap();
    for f in &r.facades {
        let (p, x, n) = f.totals();
        write!(s, "  {:>9}", format!("{p}/{x}/{n}")).unwrap();
    }
    writeln!(s, "\n").unwrap();
    for (f, c, k, why) in reasons(r) {
        writeln!(s, "  {k:4} {f}/{c}: {why}").unwrap();
    }
    writeln!(
        s,
        "\nBOILERPLATE (lines of C a caller writes, from conformance/c/*.c)\n"
    )
    .unwrap();
    write!(s, "{:24}", "pattern").unwrap();
    for n in &names {
        write!(s, "  {n:>9}").unwrap();
    }
    writeln!(s).unwrap();
    for (p, _, cells) in boilerplate_rows(r) {
        write!(s, "{p:24}").unwrap();
        for c in cells {
            write!(s, "  {c:>9}").unwrap();
        }
        writeln!(s).unwrap();
    }
    if let Some(ms) = &r.timings {
        writeln!(s, "\nTIMING ({})\n", r.timing_method).unwrap();
        writeln!(
            s,
            "{:9} {:6} {:>10} {:>10} {:>10} {:>8}  one operation",
            "design", "case", "median ns", "min", "max", "×mutex"
        )
        .unwrap();
        for m in ms {
            writeln!(
                s,
                "{:9} {:6} {:>10.1} {:>10.1} {:>10.1} {:>8.2}  {}",
                m.facade, m.case, m.median_ns, m.min_ns, m.max_ns, m.ratio, m.what
            )
            .unwrap();
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => write!(o, "\\u{:04x}", c as u32).unwrap(),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// JSON (no external dependencies; stable key order).
pub fn json(r: &Report) -> String {
    let facades: Vec<String> = r
        .facades
        .iter()
        .map(|f| {
            let cases: Vec<String> = f
                .outcomes
                .iter()
                .map(|(c, o)| {
                    let reason = match o {
                        Outcome::Pass => "null".to_string(),
                        Outcome::Fail(m) => json_str(m),
                        Outcome::NotApplicable(m) => json_str(m),
                    };
                    format!(
                        "{{\"case\":{},\"verdict\":{},\"reason\":{reason}}}",
                        json_str(c),
                        json_str(cell(o))
                    )
                })
                .collect();
            let (p, x, n) = f.totals();
            format!(
                "{{\"design\":{},\"title\":{},\"pass\":{p},\"fail\":{x},\"na\":{n},\"cases\":[{}]}}",
                json_str(f.name),
                json_str(f.title),
                cases.join(",")
            )
        })
        .collect();
    let boiler: Vec<String> = boilerplate_rows(r)
        .into_iter()
        .map(|(p, _, cells)| {
            let kv: Vec<String> = r
                .facades
                .iter()
                .zip(cells)
                .map(|(f, c)| {
                    format!(
                        "{}:{}",
                        json_str(f.name),
                        if c == "-" { "null".into() } else { c }
                    )
                })
                .collect();
            format!("{{\"pattern\":{},{}}}", json_str(p), kv.join(","))
        })
        .collect();
    let timings = match &r.timings {
        None => "null".to_string(),
        Some(ms) => format!(
            "[{}]",
            ms.iter()
                .map(|m| format!(
                    "{{\"design\":{},\"case\":{},\"what\":{},\"median_ns\":{:.2},\"min_ns\":{:.2},\"max_ns\":{:.2},\"ratio_to_mutex\":{:.4}}}",
                    json_str(m.facade),
                    json_str(m.case),
                    json_str(m.what),
                    m.median_ns,
                    m.min_ns,
                    m.max_ns,
                    m.ratio
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    format!(
        "{{\"designs\":[{}],\"boilerplate\":[{}],\"timings\":{timings}}}\n",
        facades.join(","),
        boiler.join(",")
    )
}
