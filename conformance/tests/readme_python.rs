//! The README's "Using tstate from a C extension": its commands, run
//! exactly as written (`bash -e`, from the repository's root) in a fresh
//! virtual environment per CPython found — `pip install ./python` (pip
//! builds the wheel with maturin), the C example built against
//! `tstate.get_include()` and run, Cython installed, the Cython example
//! translated, built and run — and its code blocks quoted verbatim from
//! `examples/python/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tstate_conformance::pythons;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn section() -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let start = readme
        .find("## Using tstate from a C extension")
        .expect("README.md has the section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    readme[start..end].to_string()
}

/// The code blocks of `lang` in `text`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}\n");
    text.split(&open)
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code.to_string()))
        .collect()
}

#[test]
fn the_readme_quotes_the_python_examples_verbatim() {
    let s = section();
    let c = std::fs::read_to_string(workspace().join("examples/python/callback.c")).unwrap();
    let cy = std::fs::read_to_string(workspace().join("examples/python/cy_callback.pyx")).unwrap();
    let (cb, cyb) = (blocks(&s, "c"), blocks(&s, "cython"));
    assert_eq!(
        (cb.len(), cyb.len()),
        (2, 1),
        "the section's c and cython blocks"
    );
    for b in &cb {
        assert!(
            c.contains(b.as_str()),
            "not in examples/python/callback.c:\n{b}"
        );
    }
    assert!(
        cy.contains(cyb[0].as_str()),
        "not in examples/python/cy_callback.pyx:\n{}",
        cyb[0]
    );
}

#[test]
fn the_readme_commands_build_and_run_both_examples_on_every_cpython() {
    let t0 = Instant::now();
    let found = pythons::find();
    eprintln!("CPython: {}", pythons::summary(&found));
    if found.is_empty() {
        eprintln!("no CPython 3.9-3.13 found: skipped");
        return;
    }
    let s = section();
    let marker = "<!-- readme-python-commands -->\n```sh\n";
    let script = s
        .split_once(marker)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code.to_string())
        .expect("the marked sh block");
    let root = std::env::temp_dir().join(format!("tstate-readme-{}", std::process::id()));
    let mut failures = Vec::new();
    for py in &found {
        let venv = root.join(format!("venv-{}", py.short()));
        let st = Command::new(&py.exe)
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(st.success(), "venv for {}", py.short());
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let t = Instant::now();
        let out = Command::new("bash")
            .args(["-e", "-c", &script])
            .current_dir(workspace())
            .env("PATH", &path)
            .env("VIRTUAL_ENV", &venv)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env_remove("TSTATE_BACKEND")
            .env_remove("PYTHONPATH")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let want = "called back\n0\n";
        let want_cy = "called back from Cython\n0\n";
        eprintln!(
            "{}: exit {:?} in {:.1?}",
            py.full_version,
            out.status.code(),
            t.elapsed()
        );
        if !out.status.success() || !stdout.contains(want) || !stdout.contains(want_cy) {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            failures.push(format!(
                "{}: exit {:?}\nstdout:\n{stdout}\nstderr (last lines):\n{}",
                py.full_version,
                out.status.code(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    eprintln!("test wall time {:.1?}", t0.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
