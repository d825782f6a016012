//! Everything a reader needs is in the repository: no document or source
//! file points outside it. Fails on
//!
//! * a markdown link (`[text](target)`) to a URL, or to a relative path
//!   that leaves the repository or does not exist;
//! * a path into a sibling directory of the repository (`../<dir>/…` from
//!   the repository root, such as the design notes' folder beside it,
//!   [`SIBLING`]) anywhere in a tracked text file.

use std::path::{Component, Path, PathBuf};

/// The folder beside the repository that held the design notes (spelled
/// in pieces so that this file does not name it itself).
const SIBLING: &str = concat!("..", "/", "sha", "red");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Text files of the repository (not build output, not `.git`).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name.starts_with('.') && name != ".ci" || name.starts_with("target") {
                continue;
            }
            files(&p, out);
        } else if [
            "md", "rs", "c", "h", "toml", "py", "sh", "in", "txt", "yml", "pc",
        ]
        .iter()
        .any(|x| name.ends_with(&format!(".{x}")))
            || name == "run"
        {
            out.push(p);
        }
    }
}

/// `a/b/../c` → `a/c`, without touching the file system; `None` if it
/// climbs above its start.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Every `](target)` in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut v = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                v.push(&after[..j]);
                rest = &after[j..];
            }
            None => break,
        }
    }
    v
}

/// Problems in one file (`rel`: its path from the root).
fn check(rel: &Path, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let depth = rel.components().count() - 1;
    // a path that climbs out of the repository from this file's directory
    let climb_out = format!("{}..", "../".repeat(depth));
    for (n, line) in text.lines().enumerate() {
        if line.contains(SIBLING) || (depth > 0 && line.contains(&format!("{climb_out}/"))) {
            bad.push(format!(
                "{}:{}: points outside the repository: {}",
                rel.display(),
                n + 1,
                line.trim()
            ));
        }
    }
    if rel.extension().is_some_and(|e| e == "md") {
        for t in link_targets(text) {
            let t = t.split_whitespace().next().unwrap_or("");
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            if t.contains("://") || t.starts_with("mailto:") {
                bad.push(format!(
                    "{}: links outside the repository: {t}",
                    rel.display()
                ));
                continue;
            }
            let path = t.split('#').next().unwrap_or(t);
            let joined = rel.parent().unwrap_or(Path::new("")).join(path);
            match normalize(&joined) {
                None => bad.push(format!(
                    "{}: link leaves the repository: {t}",
                    rel.display()
                )),
                Some(p) if !root().join(&p).exists() => {
                    bad.push(format!("{}: link to a missing file: {t}", rel.display()))
                }
                Some(_) => {}
            }
        }
    }
    bad
}

#[test]
fn the_checker_catches_what_it_names() {
    let r = Path::new("docs/x.md");
    assert!(!check(r, &format!("see `{SIBLING}/design/CONTRACT.md`")).is_empty());
    assert!(!check(r, "[a](https://example.org)").is_empty());
    assert!(!check(r, "[a](../../elsewhere.md)").is_empty());
    assert!(!check(r, "[a](no-such-file.md)").is_empty());
    assert!(check(r, "[a](contract.md) [b](../README.md#x) [c](#top)").is_empty());
    assert!(!check(Path::new("core/src/a.rs"), "// see ../../../x/y").is_empty());
    assert!(check(Path::new("core/src/a.rs"), "// see ../../docs/contract.md").is_empty());
}

#[test]
fn no_file_points_outside_the_repository() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.len() > 20,
        "found only {} files under {}",
        all.len(),
        root.display()
    );
    let mut bad = Vec::new();
    for p in &all {
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        let rel = p.strip_prefix(&root).expect("under root");
        // this file names the patterns it looks for
        if rel == Path::new("conformance/tests/docs_links.rs") {
            continue;
        }
        bad.extend(check(rel, &text));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
