//! The comparison the main job prints: the verdict table, the conformance
//! matrices on the model and on real CPython (with CPython's own API as the
//! `gilstate` column), the model-vs-CPython agreement, the fifteen observed
//! scenarios, the exit race, the boilerplate and the timings — as terminal
//! text, markdown (`docs/comparison.md`) and JSON.

use crate::bench::Measurement;
use crate::boilerplate;
use crate::child::{ChildOutcome, CpythonResult};
use crate::facade::Facade;
use crate::runner::{Outcome, run_case};
use crate::{exitrace, observed};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One facade's verdicts on the model, in case-list order.
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
#[derive(Default)]
pub struct Report {
    /// Per facade, on the model (empty: not run).
    pub model: Vec<FacadeRun>,
    /// Every (CPython, design, case) run in child processes, `gilstate`
    /// included (empty: not run).
    pub cpython: Vec<CpythonResult>,
    /// The CPython versions that ran (`3.11`), oldest first.
    pub pythons: Vec<String>,
    /// Which CPython versions were found and which skipped, in words.
    pub python_summary: String,
    /// The fifteen observed scenarios, if run.
    pub observed: Option<observed::Report>,
    /// The exit race and subinterpreter-end measurement, if run.
    pub exitrace: Option<exitrace::Report>,
    /// Timings, if measured.
    pub timings: Option<Vec<Measurement>>,
    /// Timing configuration, in words.
    pub timing_method: String,
    /// Runs of each racy case on CPython (at most).
    pub reps: usize,
}

/// The designs, in report order.
pub const DESIGNS: [&str; 4] = ["ensure", "handle", "activate", "guard"];

/// The baseline's column name.
pub const BASELINE: &str = "gilstate";

impl Report {
    /// Whether any applicable case of a design failed (model or CPython),
    /// or a facade row of the observed scenarios or the exit race did not
    /// pass. (The baseline's failures are its findings, not ours.)
    pub fn any_failed(&self) -> bool {
        self.model.iter().any(|f| f.totals().1 > 0)
            || self
                .cpython
                .iter()
                .any(|r| r.facade != BASELINE && r.outcome.failed())
            || self.observed.as_ref().is_some_and(|o| {
                !observed::facade_failures(o).is_empty() || !o.build_failures.is_empty()
            })
            || self
                .exitrace
                .as_ref()
                .is_some_and(|e| !e.facade_failures().is_empty())
    }

    fn cpython_of(&self, design: &str, case: &str) -> Vec<&CpythonResult> {
        self.cpython
            .iter()
            .filter(|r| r.facade == design && r.case == case)
            .collect()
    }

    fn model_of(&self, design: &str, case: &str) -> Option<&Outcome> {
        self.model
            .iter()
            .find(|f| f.name == design)?
            .outcomes
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, o)| o)
    }

    fn has_design(&self, design: &str) -> bool {
        self.model.iter().any(|f| f.name == design)
            || self.cpython.iter().any(|r| r.facade == design)
    }

    /// The cases that ran (model or CPython), in list order.
    pub fn cases(&self) -> Vec<&'static str> {
        case_names()
            .into_iter()
            .filter(|c| {
                self.model
                    .iter()
                    .any(|f| f.outcomes.iter().any(|(n, _)| n == c))
                    || self.cpython.iter().any(|x| x.case == *c)
            })
            .collect()
    }

    fn designs(&self) -> Vec<&'static str> {
        DESIGNS.into_iter().filter(|d| self.has_design(d)).collect()
    }
}

/// Runs every case whose name contains `filter` for facade `F` on the
/// model; `progress(case)` is called before each.
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

/// Every case name, in list order.
pub fn case_names() -> Vec<&'static str> {
    crate::child::case_names()
}

/// The one-line description of a case: the first sentence of its doc
/// comment in `cases.rs`.
pub fn describe(case: &str) -> String {
    static SOURCE: &str = include_str!("cases.rs");
    let needle = format!("pub fn {case}<");
    let Some(at) = SOURCE.find(&needle) else {
        return String::new();
    };
    let mut doc: Vec<&str> = SOURCE[..at]
        .lines()
        .rev()
        .take_while(|l| l.trim_start().starts_with("///"))
        .map(|l| l.trim_start().trim_start_matches("///").trim())
        .collect();
    doc.reverse();
    let text = doc.join(" ");
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text,
    }
}

fn model_cell(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail(_) => "FAIL",
        Outcome::NotApplicable(_) => "n/a",
    }
}

/// `3.9–3.11` from sorted, consecutive minor versions; `3.9, 3.11` when
/// there is a gap.
fn span_of(versions: &[&str]) -> String {
    let minor = |v: &str| v.rsplit('.').next().and_then(|m| m.parse::<u32>().ok());
    let consecutive = versions
        .windows(2)
        .all(|w| matches!((minor(w[0]), minor(w[1])), (Some(a), Some(b)) if b == a + 1));
    match versions {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] if consecutive => format!("{first}–{last}"),
        _ => versions.join(", "),
    }
}

/// A CPython cell: versions with the same set of outcome classes are
/// grouped and their counts summed (`pass`, `n/a (3.9–3.11); pass
/// (3.12–3.13)`, `THREAD-KILLED 12/20, SEGFAULT 8/20`); counts are shown
/// for a repeated case of the baseline, or whenever the classes are mixed.
fn cpython_cell(results: &[&CpythonResult], versions: &[String]) -> String {
    if results.is_empty() {
        return "-".into();
    }
    // (classes, summed counts, runs, versions)
    type Group<'a> = (
        Vec<&'static str>,
        Vec<(&'static str, usize)>,
        usize,
        Vec<&'a str>,
    );
    let mut groups: Vec<Group> = Vec::new();
    for v in versions {
        let Some(r) = results.iter().find(|r| &r.python == v) else {
            continue;
        };
        let mut classes: Vec<&'static str> = r.counts.iter().map(|(c, _)| *c).collect();
        if classes.is_empty() {
            classes.push(r.outcome.class());
        }
        classes.sort_unstable();
        let counts = if r.counts.is_empty() {
            vec![(r.outcome.class(), r.runs.max(1))]
        } else {
            r.counts.clone()
        };
        match groups.iter_mut().find(|g| g.0 == classes) {
            Some(g) => {
                for (c, n) in counts {
                    match g.1.iter_mut().find(|(k, _)| *k == c) {
                        Some(e) => e.1 += n,
                        None => g.1.push((c, n)),
                    }
                }
                g.2 += r.runs;
                g.3.push(v);
            }
            None => groups.push((classes, counts, r.runs, vec![v])),
        }
    }
    let baseline = results.iter().any(|r| r.facade == BASELINE);
    let label = |g: &Group| {
        let mut counts = g.1.clone();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        if counts.len() > 1 || (baseline && g.2 > g.3.len()) {
            counts
                .iter()
                .map(|(c, n)| format!("{c} {n}/{}", g.2))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            counts[0].0.to_string()
        }
    };
    if groups.len() == 1 {
        return label(&groups[0]);
    }
    groups
        .iter()
        .map(|g| format!("{} ({})", label(g), span_of(&g.3)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A design's missing safety property, shown as what it is.
fn na_label(reason: &str) -> String {
    if reason.starts_with("release names no span") || reason.starts_with("no handles") {
        "cannot detect".into()
    } else if reason.starts_with("no guards") {
        "no guards".into()
    } else if reason.starts_with("this backend cannot") {
        "unsupported here".into()
    } else {
        "n/a".into()
    }
}

// ----- the verdict table ------------------------------------------------------

/// One row of the verdict table.
pub struct VerdictRow {
    /// Design (or the baseline).
    pub design: &'static str,
    /// Survives finalization on real CPython?
    pub survives: String,
    /// Refuses cleanly?
    pub refuses: String,
    /// Restores nesting?
    pub nesting: String,
    /// Detects misuse?
    pub misuse: String,
    /// Lines of C per pattern (fresh thread / nested call).
    pub lines: String,
    /// Cost vs PyGILState (nested ensure + release).
    pub cost: String,
}

const REFUSAL_CASES: [&str; 3] = [
    "enter_refused_once_finalizing_with_threads_inside",
    "stale_id_after_finalize_is_refused",
    "enter_races_create_and_finalize",
];
const NESTING_CASES: [&str; 4] = [
    "nested_on_attached_thread",
    "reentry_after_save_nogil",
    "nesting_a_b_a_restores_exactly",
    "subinterpreter_thread_calls_its_own_subinterpreter",
];

/// "yes" when every (model, CPython) run of `cases` passed for `design`;
/// else the classes that came instead.
fn property(r: &Report, design: &str, cases: &[&str]) -> String {
    let mut bad: BTreeMap<String, usize> = BTreeMap::new();
    let mut ran = 0;
    for c in cases {
        if let Some(o) = r.model_of(design, c) {
            ran += 1;
            if let Outcome::Fail(_) = o {
                *bad.entry("FAIL (model)".into()).or_default() += 1;
            }
        }
        for x in r.cpython_of(design, c) {
            ran += 1;
            if x.outcome.failed() {
                *bad.entry(x.outcome.class().to_string()).or_default() += 1;
            }
        }
    }
    if ran == 0 {
        return "-".into();
    }
    if bad.is_empty() {
        "yes".into()
    } else {
        let n: usize = bad.values().sum();
        format!(
            "no ({n} of {ran} runs, case × backend/version): {}",
            bad.into_iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn misuse_property(r: &Report, design: &str) -> String {
    let mut detected = 0;
    let mut cannot = 0;
    let mut nothing = 0;
    let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
    for c in case_names().iter().filter(|c| c.starts_with("misuse_")) {
        // the model's verdict, else the first CPython version's
        let o = match r.model_of(design, c) {
            Some(Outcome::Fail(_)) => Outcome::Fail("FAIL (model)".into()),
            Some(o) => o.clone(),
            None => match r.cpython_of(design, c).first() {
                Some(x) => match &x.outcome {
                    ChildOutcome::Pass => Outcome::Pass,
                    ChildOutcome::NotApplicable(why) => {
                        Outcome::NotApplicable(if na_label(why) == "cannot detect" {
                            "release names no span"
                        } else {
                            "n/a"
                        })
                    }
                    other => Outcome::Fail(other.class().into()),
                },
                None => continue,
            },
        };
        match o {
            Outcome::Pass => detected += 1,
            Outcome::NotApplicable(why) if na_label(why) == "cannot detect" => cannot += 1,
            Outcome::NotApplicable(_) => nothing += 1,
            Outcome::Fail(class) => *wrong.entry(class).or_default() += 1,
        }
    }
    let failed: usize = wrong.values().sum();
    let expressible = detected + cannot + failed;
    if expressible + nothing == 0 {
        return "-".into();
    }
    let mut s = format!("{detected} of {expressible} detected");
    if cannot > 0 {
        write!(s, "; cannot detect {cannot} (release names no span)").unwrap();
    }
    if failed > 0 {
        let classes: Vec<String> = wrong.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        write!(s, "; {failed} not detected: {}", classes.join(", ")).unwrap();
    }
    if nothing > 0 {
        write!(s, " ({nothing} misuses do not exist in the design)").unwrap();
    }
    s
}

fn survives(r: &Report, design: &str) -> String {
    let Some(e) = &r.exitrace else {
        return property(
            r,
            design,
            &["enter_refused_once_finalizing_with_threads_inside"],
        );
    };
    let rows = e.rows_of(|row| row.design.name == design);
    let runs: usize = rows.iter().map(|x| x.runs.len()).sum();
    if runs == 0 {
        return "-".into();
    }
    let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
    for x in &rows {
        for run in &x.runs {
            *by.entry(run.outcome.label()).or_default() += 1;
        }
    }
    let clean = by.get("clean").copied().unwrap_or(0);
    let what = "runs of the exit race and the subinterpreter end";
    if clean == runs {
        format!("yes: {clean}/{runs} {what} clean")
    } else {
        let rest: Vec<String> = by
            .iter()
            .filter(|(k, _)| **k != "clean")
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        format!("no: of {runs} {what}, {clean} clean, {}", rest.join(", "))
    }
}

fn lines_of(design: &str) -> String {
    let Some(i) = boilerplate::SOURCES.iter().position(|(n, _)| *n == design) else {
        return "-".into();
    };
    let t = boilerplate::table();
    let get = |p: &str| {
        t.iter()
            .find(|(name, _)| *name == p)
            .and_then(|(_, c)| c[i])
            .map_or("-".into(), |n| n.to_string())
    };
    format!("{} / {}", get("fresh-thread"), get("nested-call"))
}

fn cost_of(r: &Report, design: &str) -> String {
    let Some(ms) = &r.timings else {
        return "-".into();
    };
    let Some(backend) = ms
        .iter()
        .find(|m| m.facade == BASELINE && m.backend.starts_with("cpython"))
        .map(|m| m.backend.clone())
    else {
        return "not measured (no CPython)".into();
    };
    let find = |f: &str, c: &str| {
        ms.iter()
            .find(|m| m.backend == backend && m.facade == f && m.case == c)
    };
    let cells: Vec<String> = ["A", "B", "C"]
        .iter()
        .filter_map(|c| match (find(design, c), find(BASELINE, c)) {
            (Some(d), Some(g)) if g.median_ns > 0.0 => {
                Some(format!("{c} {:.2}×", d.median_ns / g.median_ns))
            }
            _ => None,
        })
        .collect();
    if cells.is_empty() {
        return "-".into();
    }
    format!("{} (median time, {backend})", cells.join(", "))
}

/// The verdict table's rows: every design, then the baseline.
pub fn verdicts(r: &Report) -> Vec<VerdictRow> {
    let mut rows: Vec<VerdictRow> = r
        .designs()
        .into_iter()
        .map(|d| VerdictRow {
            design: d,
            survives: survives(r, d),
            refuses: property(r, d, &REFUSAL_CASES),
            nesting: property(r, d, &NESTING_CASES),
            misuse: misuse_property(r, d),
            lines: lines_of(d),
            cost: cost_of(r, d),
        })
        .collect();
    if r.cpython.iter().any(|x| x.facade == BASELINE) || r.exitrace.is_some() {
        rows.push(VerdictRow {
            design: BASELINE,
            survives: survives(r, BASELINE),
            refuses: property(r, BASELINE, &REFUSAL_CASES),
            nesting: property(r, BASELINE, &NESTING_CASES),
            misuse: misuse_property(r, BASELINE),
            lines: "-".into(),
            cost: if r.timings.is_some() {
                "1.00× (the reference)".into()
            } else {
                "-".into()
            },
        });
    }
    rows
}

// ----- agreement ----------------------------------------------------------------

/// One case where the model's verdict and CPython's differ.
pub struct Disagreement {
    /// Design.
    pub design: &'static str,
    /// Case.
    pub case: &'static str,
    /// CPython version.
    pub python: String,
    /// The model's class.
    pub model: &'static str,
    /// CPython's class.
    pub cpython: &'static str,
    /// Why: a documented limit of the CPython backend, or a fidelity bug.
    pub reason: String,
}

/// Per design: (agreeing, compared) over case × CPython version, and the
/// disagreements.
pub fn agreement(r: &Report) -> (Vec<(&'static str, usize, usize)>, Vec<Disagreement>) {
    let mut per = Vec::new();
    let mut dis = Vec::new();
    for d in r.designs() {
        let (mut agree, mut total) = (0, 0);
        for c in case_names() {
            let Some(m) = r.model_of(d, c) else { continue };
            for x in r.cpython_of(d, c) {
                total += 1;
                let mc = model_cell(m);
                let cc = match x.outcome {
                    ChildOutcome::Pass => "pass",
                    ChildOutcome::NotApplicable(_) => "n/a",
                    _ => "FAIL",
                };
                if mc == cc {
                    agree += 1;
                } else {
                    let reason = match &x.outcome {
                        ChildOutcome::NotApplicable(why) => {
                            format!("documented limit of the CPython backend: {why}")
                        }
                        o => format!("fidelity bug: {} {}", o.class(), o.detail()),
                    };
                    dis.push(Disagreement {
                        design: d,
                        case: c,
                        python: x.python.clone(),
                        model: mc,
                        cpython: x.outcome.class(),
                        reason,
                    });
                }
            }
        }
        per.push((d, agree, total));
    }
    (per, dis)
}

// ----- markdown -------------------------------------------------------------------

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markers around the part of `docs/comparison.md` that
/// `conformance/tests/comparison_doc.rs` checks against a fresh run of the
/// model suite (deterministic: verdicts, reasons, boilerplate).
pub const BEGIN: &str = "<!-- tstate:conformance:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- tstate:conformance:end -->";
/// Markers around the CPython matrix of the designs (deterministic too: it
/// is checked by `conformance/tests/cpython_suite.rs`).
pub const CPY_BEGIN: &str = "<!-- tstate:cpython:begin -->";
/// See [`CPY_BEGIN`].
pub const CPY_END: &str = "<!-- tstate:cpython:end -->";

/// Markers around the verdict section of `docs/comparison.md`, which
/// `docs/choosing.md` quotes (checked equal by `conformance/tests/choosing_doc.rs`).
pub const VERDICT_BEGIN: &str = "<!-- tstate:verdicts:begin -->";
/// See [`VERDICT_BEGIN`].
pub const VERDICT_END: &str = "<!-- tstate:verdicts:end -->";

/// The verdict table in markdown (between [`VERDICT_BEGIN`] and
/// [`VERDICT_END`]).
pub fn verdict_markdown(r: &Report) -> String {
    let mut s = String::new();
    writeln!(s, "## Verdicts\n\n{VERDICT_BEGIN}\n").unwrap();
    writeln!(
        s,
        "| design | survives finalization on real CPython? | refuses cleanly? | restores nesting? | detects misuse? | lines of C (fresh thread / nested call) | cost vs PyGILState |\n|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for v in verdicts(r) {
        writeln!(
            s,
            "| **{}** | {} | {} | {} | {} | {} | {} |",
            v.design,
            md_escape(&v.survives),
            md_escape(&v.refuses),
            md_escape(&v.nesting),
            md_escape(&v.misuse),
            v.lines,
            md_escape(&v.cost)
        )
        .unwrap();
    }
    writeln!(s).unwrap();
    for d in r.designs() {
        let mut parts = Vec::new();
        if let Some(f) = r.model.iter().find(|f| f.name == d) {
            let (p, x, n) = f.totals();
            parts.push(format!("model {p} pass / {x} FAIL / {n} n/a"));
        }
        let cp: Vec<&CpythonResult> = r.cpython.iter().filter(|x| x.facade == d).collect();
        if !cp.is_empty() {
            let pass = cp
                .iter()
                .filter(|x| x.outcome == ChildOutcome::Pass)
                .count();
            let na = cp
                .iter()
                .filter(|x| matches!(x.outcome, ChildOutcome::NotApplicable(_)))
                .count();
            parts.push(format!(
                "CPython {pass} pass / {} FAIL / {na} n/a (case × version)",
                cp.len() - pass - na
            ));
        }
        writeln!(s, "- **{d}**: {}", parts.join("; ")).unwrap();
    }
    writeln!(
        s,
        "\n*Survives*: the extension-module exit race (native threads calling Python through the design while the interpreter exits) on every CPython found. *Refuses cleanly*: the cases `{}` on the model and on every CPython. *Restores nesting*: `{}`. *Detects misuse*: the `misuse_*` cases (a design whose release names no span cannot tell a double or out-of-order release from a legitimate one).\n",
        REFUSAL_CASES.join("`, `"),
        NESTING_CASES.join("`, `")
    )
    .unwrap();
    writeln!(s, "{VERDICT_END}\n").unwrap();
    s
}

/// The model part in markdown (matrix with descriptions, reasons,
/// boilerplate). Deterministic: checked against the doc.
pub fn model_markdown(r: &Report) -> String {
    let mut s = String::new();
    let names: Vec<&str> = r.model.iter().map(|f| f.name).collect();
    writeln!(s, "## Conformance on the model\n").unwrap();
    writeln!(s, "| case | what it checks | {} |", names.join(" | ")).unwrap();
    writeln!(s, "|---|---|{}", ":-:|".repeat(names.len())).unwrap();
    for c in r.cases() {
        let cells: Vec<String> = r
            .model
            .iter()
            .map(
                |f| match f.outcomes.iter().find(|(n, _)| *n == c).map(|(_, o)| o) {
                    Some(Outcome::NotApplicable(why)) => na_label(why),
                    Some(o) => model_cell(o).into(),
                    None => "-".into(),
                },
            )
            .collect();
        writeln!(
            s,
            "| `{c}` | {} | {} |",
            md_escape(&describe(c)),
            cells.join(" | ")
        )
        .unwrap();
    }
    let totals: Vec<String> = r
        .model
        .iter()
        .map(|f| {
            let (p, x, n) = f.totals();
            format!("{p} / {x} / {n}")
        })
        .collect();
    writeln!(s, "| **pass / FAIL / n/a** | | {} |\n", totals.join(" | ")).unwrap();
    let mut reasons = Vec::new();
    for f in &r.model {
        for (c, o) in &f.outcomes {
            match o {
                Outcome::Fail(m) => reasons.push((f.name, *c, "FAIL", m.clone())),
                Outcome::NotApplicable(why) => reasons.push((f.name, *c, "n/a", why.to_string())),
                Outcome::Pass => {}
            }
        }
    }
    if !reasons.is_empty() {
        writeln!(s, "### Reasons for every FAIL and n/a\n").unwrap();
        writeln!(s, "| design | case | verdict | reason |\n|---|---|---|---|").unwrap();
        for (f, c, k, why) in reasons {
            writeln!(s, "| {f} | `{c}` | {k} | {} |", md_escape(&why)).unwrap();
        }
        writeln!(s).unwrap();
    }
    s.push_str(&boilerplate_markdown(&names));
    s
}

fn boilerplate_markdown(names: &[&str]) -> String {
    let mut s = String::new();
    writeln!(s, "## Boilerplate: lines of C a caller writes\n").unwrap();
    writeln!(
        s,
        "Counted from the marked regions of `conformance/c/<design>.c` (programs the tests build and run): non-blank lines, not comments, not test assertions.\n"
    )
    .unwrap();
    let cols: Vec<usize> = names
        .iter()
        .filter_map(|n| boilerplate::SOURCES.iter().position(|(m, _)| m == n))
        .collect();
    writeln!(s, "| pattern | what | {} |", names.join(" | ")).unwrap();
    writeln!(s, "|---|---|{}", "--:|".repeat(names.len())).unwrap();
    for ((p, counts), (_, what)) in boilerplate::table().into_iter().zip(boilerplate::PATTERNS) {
        let cells: Vec<String> = cols
            .iter()
            .map(|&i| counts[i].map_or("-".into(), |n| n.to_string()))
            .collect();
        writeln!(s, "| {p} | {} | {} |", md_escape(what), cells.join(" | ")).unwrap();
    }
    s
}

/// The CPython matrix of the designs (no baseline): deterministic.
pub fn cpython_designs_markdown(r: &Report) -> String {
    let mut s = String::new();
    let designs = r.designs();
    writeln!(
        s,
        "## Conformance on real CPython ({})\n",
        r.pythons.join(", ")
    )
    .unwrap();
    writeln!(s, "Each case in its own process per CPython version (`tstate-compare --child`), the facade on its CPython backend.\n").unwrap();
    writeln!(s, "| case | {} |", designs.join(" | ")).unwrap();
    writeln!(s, "|---|{}", ":-:|".repeat(designs.len())).unwrap();
    for c in r.cases() {
        let cells: Vec<String> = designs
            .iter()
            .map(|d| cpython_cell(&r.cpython_of(d, c), &r.pythons))
            .collect();
        writeln!(s, "| `{c}` | {} |", cells.join(" | ")).unwrap();
    }
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for x in r.cpython.iter().filter(|x| x.facade != BASELINE) {
        if let ChildOutcome::NotApplicable(why) | ChildOutcome::Fail(why) = &x.outcome {
            reasons
                .entry(format!(
                    "{} | `{}` | {} | {}",
                    x.facade,
                    x.case,
                    x.outcome.class(),
                    md_escape(why)
                ))
                .or_default()
                .push(x.python.clone());
        }
    }
    if !reasons.is_empty() {
        writeln!(
            s,
            "\n| design | case | verdict | reason | CPython |\n|---|---|---|---|---|"
        )
        .unwrap();
        for (k, vs) in reasons {
            let vs: Vec<&str> = vs.iter().map(String::as_str).collect();
            writeln!(s, "| {k} | {} |", span_of(&vs)).unwrap();
        }
    }
    s
}

/// The baseline column: CPython's own API on the same cases.
pub fn baseline_markdown(r: &Report) -> String {
    let mut s = String::new();
    if !r.cpython.iter().any(|x| x.facade == BASELINE) {
        return s;
    }
    writeln!(
        s,
        "## The same cases with CPython's own API (`gilstate`)\n\n`PyGILState_Ensure` / `PyGILState_Release`, `PyEval_SaveThread` / `PyEval_RestoreThread`, `Py_NewInterpreter` / `Py_EndInterpreter`, `Py_FinalizeEx`, `PyGILState_Check`, on real libpython, each case in its own process under a {}-second watchdog; a case that races (its outcome can depend on timing) runs up to {} times and its outcomes are counted, stopping early after {} runs that each ran into the watchdog. Outcome classes: `pass`, `THREAD-KILLED` (CPython ended the thread inside its call), `SEGFAULT`, `ABORT` (a fatal error), `HANG` (the watchdog), `WRONG-INTERPRETER`, `WRONG-ANSWER`, `n/a` (the API cannot express the case). Most cases run in a subinterpreter (so that one can be finalized without ending the process); `PyGILState_Ensure` takes no interpreter and attaches to main, which is what `WRONG-INTERPRETER` says there. A failed check, then a hang, is shown as the check's class with \"then HANG\".\n",
        crate::child::BASELINE_WATCHDOG.as_secs(),
        r.reps.max(1),
        crate::child::WATCHDOG_RUNS
    )
    .unwrap();
    writeln!(s, "| case | gilstate | first failure |\n|---|---|---|").unwrap();
    for c in r.cases() {
        let rs = r.cpython_of(BASELINE, c);
        let first = rs
            .iter()
            .find(|x| x.outcome.failed() || matches!(x.outcome, ChildOutcome::NotApplicable(_)))
            .map(|x| format!("{}: {}", x.python, x.outcome.detail()))
            .unwrap_or_default();
        writeln!(
            s,
            "| `{c}` | {} | {} |",
            cpython_cell(&rs, &r.pythons),
            md_escape(&first.chars().take(160).collect::<String>())
        )
        .unwrap();
    }
    writeln!(s).unwrap();
    s
}

/// Model vs CPython, per design.
pub fn agreement_markdown(r: &Report) -> String {
    let mut s = String::new();
    if r.model.is_empty() || r.cpython.is_empty() {
        return s;
    }
    let (per, dis) = agreement(r);
    writeln!(s, "## The model against real CPython\n").unwrap();
    writeln!(s, "Every case's verdict on the model and on each CPython version, compared (case × version).\n").unwrap();
    writeln!(s, "| design | agree |\n|---|--:|").unwrap();
    for (d, a, t) in &per {
        writeln!(s, "| {d} | {a} of {t} |").unwrap();
    }
    if !dis.is_empty() {
        let mut grouped: BTreeMap<(String, String, String, String), Vec<String>> = BTreeMap::new();
        for x in &dis {
            grouped
                .entry((
                    format!("{} | `{}`", x.design, x.case),
                    x.model.to_string(),
                    x.cpython.to_string(),
                    x.reason.clone(),
                ))
                .or_default()
                .push(x.python.clone());
        }
        writeln!(s, "\nEvery disagreement:\n\n| design | case | model | CPython | on | why |\n|---|---|---|---|---|---|").unwrap();
        for ((dc, m, c, why), vs) in grouped {
            let vs: Vec<&str> = vs.iter().map(String::as_str).collect();
            writeln!(
                s,
                "| {dc} | {m} | {c} | {} | {} |",
                span_of(&vs),
                md_escape(&why)
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
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
        "| backend | design | case | one operation | median ns | min | max | × mutex pair | note |\n|---|---|:-:|---|--:|--:|--:|--:|---|"
    )
    .unwrap();
    for m in ms {
        writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
            m.backend,
            m.facade,
            m.case,
            m.what,
            m.median_ns,
            m.min_ns,
            m.max_ns,
            m.ratio,
            noise_note(m, ms)
        )
        .unwrap();
    }
    s
}

/// "within noise of X": another design's row of the same case whose
/// min–max range overlaps this one's.
fn noise_note(m: &Measurement, all: &[Measurement]) -> String {
    let near: Vec<&str> = all
        .iter()
        .filter(|o| {
            o.case == m.case
                && o.backend == m.backend
                && o.facade != m.facade
                && o.facade != "baseline"
                && m.facade != "baseline"
                && o.min_ns <= m.max_ns
                && m.min_ns <= o.max_ns
        })
        .map(|o| o.facade)
        .collect();
    if near.is_empty() {
        String::new()
    } else {
        format!("within noise of {}", near.join(", "))
    }
}

/// The whole markdown document (`docs/comparison.md`).
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "# tstate: the designs compared\n\nGenerated by `cargo run --release -p tstate-conformance -- --markdown > docs/comparison.md`; do not edit. The model part is checked by `conformance/tests/comparison_doc.rs`, the CPython matrix of the designs by `conformance/tests/cpython_suite.rs`; the baseline's counts, the exit race and the timings are from the run that wrote this file.\n\nCPython versions: {}.\n",
        r.python_summary
    )
    .unwrap();
    s.push_str(&verdict_markdown(r));
    if !r.model.is_empty() {
        writeln!(s, "{BEGIN}").unwrap();
        s.push_str(&model_markdown(r));
        writeln!(s, "{END}\n").unwrap();
    }
    if !r.cpython.is_empty() {
        writeln!(s, "{CPY_BEGIN}").unwrap();
        s.push_str(&cpython_designs_markdown(r));
        writeln!(s, "{CPY_END}\n").unwrap();
        s.push_str(&baseline_markdown(r));
        s.push_str(&agreement_markdown(r));
    }
    if let Some(o) = &r.observed {
        writeln!(
            s,
            "## The fifteen observed scenarios (every CPython found)\n"
        )
        .unwrap();
        s.push_str(&observed::render_markdown(o, false));
        writeln!(s).unwrap();
    }
    if let Some(e) = &r.exitrace {
        writeln!(
            s,
            "## Exit race and subinterpreter end (every CPython found)\n"
        )
        .unwrap();
        s.push_str(&exitrace::render_markdown(e));
        writeln!(s).unwrap();
    }
    s.push_str(&timing_markdown(r));
    s
}

// ----- terminal -----------------------------------------------------------------

/// Plain text for a terminal: the verdict table first, then the detail.
pub fn terminal(r: &Report) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "tstate: the designs compared\nCPython versions: {}\n",
        r.python_summary
    )
    .unwrap();
    writeln!(s, "VERDICTS").unwrap();
    for v in verdicts(r) {
        writeln!(s, "  {}", v.design).unwrap();
        writeln!(
            s,
            "    survives finalization on real CPython: {}",
            v.survives
        )
        .unwrap();
        writeln!(
            s,
            "    refuses cleanly:                       {}",
            v.refuses
        )
        .unwrap();
        writeln!(
            s,
            "    restores nesting:                      {}",
            v.nesting
        )
        .unwrap();
        writeln!(s, "    detects misuse:                        {}", v.misuse).unwrap();
        writeln!(s, "    lines of C (fresh thread / nested):    {}", v.lines).unwrap();
        writeln!(s, "    cost vs PyGILState:                    {}", v.cost).unwrap();
    }
    let cases = r.cases();
    let w = cases.iter().map(|c| c.len()).max().unwrap_or(4);
    if !r.model.is_empty() {
        writeln!(s, "\nCONFORMANCE ON THE MODEL (case × design)\n").unwrap();
        write!(s, "{:w$}", "case").unwrap();
        for f in &r.model {
            write!(s, "  {:>15}", f.name).unwrap();
        }
        writeln!(s, "   what it checks").unwrap();
        for c in &cases {
            write!(s, "{c:w$}").unwrap();
            for f in &r.model {
                let cell = match f.outcomes.iter().find(|(n, _)| n == c).map(|(_, o)| o) {
                    Some(Outcome::NotApplicable(why)) => na_label(why),
                    Some(o) => model_cell(o).into(),
                    None => "-".into(),
                };
                write!(s, "  {cell:>15}").unwrap();
            }
            writeln!(s, "   {}", describe(c)).unwrap();
        }
        for f in &r.model {
            for (c, o) in &f.outcomes {
                if let Outcome::Fail(m) = o {
                    writeln!(s, "  FAIL {}/{c}: {m}", f.name).unwrap();
                }
            }
        }
    }
    if !r.cpython.is_empty() {
        let mut cols: Vec<&str> = r.designs();
        if r.cpython.iter().any(|x| x.facade == BASELINE) {
            cols.push(BASELINE);
        }
        writeln!(
            s,
            "\nCONFORMANCE ON REAL CPYTHON ({}; each case in its own process)\n",
            r.pythons.join(", ")
        )
        .unwrap();
        let rows: Vec<Vec<String>> = cases
            .iter()
            .map(|c| {
                cols.iter()
                    .map(|d| cpython_cell(&r.cpython_of(d, c), &r.pythons))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].chars().count())
                    .chain(std::iter::once(cols[i].len()))
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        write!(s, "{:w$}", "case").unwrap();
        for (d, cw) in cols.iter().zip(&widths) {
            write!(s, "  {d:cw$}").unwrap();
        }
        writeln!(s).unwrap();
        for (c, row) in cases.iter().zip(&rows) {
            write!(s, "{c:w$}").unwrap();
            for (cell, cw) in row.iter().zip(&widths) {
                write!(s, "  {cell:cw$}").unwrap();
            }
            writeln!(s).unwrap();
        }
        for x in r
            .cpython
            .iter()
            .filter(|x| x.facade != BASELINE && x.outcome.failed())
        {
            writeln!(
                s,
                "  {} {} {}/{}: {}",
                x.outcome.class(),
                x.python,
                x.facade,
                x.case,
                x.outcome.detail()
            )
            .unwrap();
        }
        if !r.model.is_empty() {
            let (per, dis) = agreement(r);
            writeln!(s, "\nMODEL vs REAL CPYTHON (case × version)").unwrap();
            for (d, a, t) in per {
                writeln!(s, "  {d:>9}: agree {a} of {t}").unwrap();
            }
            for x in dis {
                writeln!(
                    s,
                    "    {} {} on {}: model {} / CPython {} — {}",
                    x.design, x.case, x.python, x.model, x.cpython, x.reason
                )
                .unwrap();
            }
        }
    }
    if let Some(o) = &r.observed {
        writeln!(s, "\nTHE FIFTEEN OBSERVED SCENARIOS\n").unwrap();
        s.push_str(&observed::render_terminal(o));
    }
    if let Some(e) = &r.exitrace {
        writeln!(s, "\nEXIT RACE AND SUBINTERPRETER END\n").unwrap();
        s.push_str(&exitrace::render_terminal(e));
    }
    let names: Vec<&str> = r.designs();
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
    let cols: Vec<usize> = names
        .iter()
        .filter_map(|n| boilerplate::SOURCES.iter().position(|(m, _)| m == n))
        .collect();
    for (p, counts) in boilerplate::table() {
        write!(s, "{p:24}").unwrap();
        for &i in &cols {
            write!(
                s,
                "  {:>9}",
                counts[i].map_or("-".into(), |n| n.to_string())
            )
            .unwrap();
        }
        writeln!(s).unwrap();
    }
    if let Some(ms) = &r.timings {
        writeln!(s, "\nTIMING ({})\n", r.timing_method).unwrap();
        writeln!(
            s,
            "{:12} {:9} {:4} {:>10} {:>10} {:>10} {:>8}  one operation",
            "backend", "design", "case", "median ns", "min", "max", "×mutex"
        )
        .unwrap();
        for m in ms {
            let note = noise_note(m, ms);
            writeln!(
                s,
                "{:12} {:9} {:4} {:>10.1} {:>10.1} {:>10.1} {:>8.2}  {}{}",
                m.backend,
                m.facade,
                m.case,
                m.median_ns,
                m.min_ns,
                m.max_ns,
                m.ratio,
                m.what,
                if note.is_empty() {
                    String::new()
                } else {
                    format!("  ({note})")
                }
            )
            .unwrap();
        }
    }
    s
}

// ----- JSON ---------------------------------------------------------------------

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

/// JSON (no external dependencies; stable key order). Every result names
/// its design, backend, CPython version (null on the model), case,
/// verdict, count (runs with that verdict) and reason.
pub fn json(r: &Report) -> String {
    let mut results = Vec::new();
    for f in &r.model {
        for (c, o) in &f.outcomes {
            let reason = match o {
                Outcome::Pass => "null".to_string(),
                Outcome::Fail(m) => json_str(m),
                Outcome::NotApplicable(m) => json_str(m),
            };
            results.push(format!(
                "{{\"design\":{},\"backend\":\"model\",\"python\":null,\"case\":{},\"description\":{},\"verdict\":{},\"count\":1,\"runs\":1,\"reason\":{reason}}}",
                json_str(f.name),
                json_str(c),
                json_str(&describe(c)),
                json_str(model_cell(o))
            ));
        }
    }
    for x in &r.cpython {
        let counts: Vec<String> = x
            .counts
            .iter()
            .map(|(c, n)| format!("{}:{n}", json_str(c)))
            .collect();
        let count = x
            .counts
            .iter()
            .find(|(c, _)| *c == x.outcome.class())
            .map_or(1, |(_, n)| *n);
        results.push(format!(
            "{{\"design\":{},\"backend\":\"cpython\",\"python\":{},\"case\":{},\"description\":{},\"verdict\":{},\"count\":{count},\"runs\":{},\"counts\":{{{}}},\"reason\":{}}}",
            json_str(x.facade),
            json_str(&x.python),
            json_str(x.case),
            json_str(&describe(x.case)),
            json_str(x.outcome.class()),
            x.runs,
            counts.join(","),
            if x.outcome.detail().is_empty() { "null".into() } else { json_str(x.outcome.detail()) }
        ));
    }
    let verdict_rows: Vec<String> = verdicts(r)
        .into_iter()
        .map(|v| {
            format!(
                "{{\"design\":{},\"survives_finalization\":{},\"refuses_cleanly\":{},\"restores_nesting\":{},\"detects_misuse\":{},\"lines_of_c\":{},\"cost_vs_pygilstate\":{}}}",
                json_str(v.design),
                json_str(&v.survives),
                json_str(&v.refuses),
                json_str(&v.nesting),
                json_str(&v.misuse),
                json_str(&v.lines),
                json_str(&v.cost)
            )
        })
        .collect();
    let (per, dis) = agreement(r);
    let agree: Vec<String> = per
        .iter()
        .map(|(d, a, t)| {
            format!(
                "{{\"design\":{},\"agree\":{a},\"compared\":{t}}}",
                json_str(d)
            )
        })
        .collect();
    let disagree: Vec<String> = dis
        .iter()
        .map(|x| {
            format!(
                "{{\"design\":{},\"case\":{},\"python\":{},\"model\":{},\"cpython\":{},\"reason\":{}}}",
                json_str(x.design),
                json_str(x.case),
                json_str(&x.python),
                json_str(x.model),
                json_str(x.cpython),
                json_str(&x.reason)
            )
        })
        .collect();
    let observed = match &r.observed {
        None => "null".to_string(),
        Some(o) => {
            let rows: Vec<String> = o
                .results
                .iter()
                .map(|x| {
                    format!(
                        "{{\"scenario\":{},\"design\":{},\"python\":{},\"verdict\":{},\"cell\":{}}}",
                        json_str(x.scenario),
                        json_str(x.design),
                        json_str(&x.python),
                        json_str(x.dominant().label()),
                        json_str(&x.cell())
                    )
                })
                .collect();
            format!("[{}]", rows.join(","))
        }
    };
    let exit = match &r.exitrace {
        None => "null".to_string(),
        Some(e) => {
            let rows: Vec<String> = e
                .rows
                .iter()
                .map(|row| {
                    format!(
                        "{{\"python\":{},\"experiment\":{},\"design\":{},\"runs\":{},\"clean\":{},\"killed\":{},\"crashed\":{},\"hung\":{}}}",
                        json_str(&row.python),
                        json_str(row.experiment.label()),
                        json_str(row.design.name),
                        row.runs.len(),
                        row.count(exitrace::Outcome::Clean),
                        row.count(exitrace::Outcome::Killed),
                        row.count(exitrace::Outcome::Crashed),
                        row.count(exitrace::Outcome::Hung)
                    )
                })
                .collect();
            format!("[{}]", rows.join(","))
        }
    };
    let timings = match &r.timings {
        None => "null".to_string(),
        Some(ms) => format!(
            "[{}]",
            ms.iter()
                .map(|m| format!(
                    "{{\"backend\":{},\"design\":{},\"case\":{},\"what\":{},\"median_ns\":{:.2},\"min_ns\":{:.2},\"max_ns\":{:.2},\"ratio_to_mutex\":{:.4}}}",
                    json_str(&m.backend),
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
        "{{\"pythons\":{},\"verdicts\":[{}],\"results\":[{}],\"agreement\":[{}],\"disagreements\":[{}],\"observed\":{observed},\"exit_race\":{exit},\"timings\":{timings}}}\n",
        json_str(&r.python_summary),
        verdict_rows.join(","),
        results.join(","),
        agree.join(","),
        disagree.join(",")
    )
}
