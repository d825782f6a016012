//! Generated files are current: each facade's `src/shared.rs` (rendered
//! from `conformance/templates/shared_abi.rs.in`), the inline scaffolding of
//! its header's trailer (`conformance/templates/inline_scaffold.h.in`, in its
//! `cbindgen.toml`) and its C header (cbindgen, the
//! version pinned by Cargo.lock). `TSTATE_BLESS=1` rewrites them instead of
//! failing. Each header also compiles alone as C11 and C++17 with
//! `-Wall -Wextra -Werror -pedantic`.

use std::path::{Path, PathBuf};
use std::process::Command;

const FACADES: [(&str, &str); 4] = [
    ("ensure", "tse"),
    ("handle", "tsh"),
    ("activate", "tsa"),
    ("guard", "tsg"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn bless() -> bool {
    std::env::var_os("TSTATE_BLESS").is_some()
}

/// Compares `want` with the file at `path`; with TSTATE_BLESS writes it.
fn check_file(path: &Path, want: &str) -> Result<(), String> {
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have == want {
        return Ok(());
    }
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, want).unwrap();
        return Ok(());
    }
    let line = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .map_or(have.lines().count().min(want.lines().count()) + 1, |i| {
            i + 1
        });
    Err(format!(
        "{} is out of date (first difference at line {line}); run TSTATE_BLESS=1 cargo test -p tstate-conformance --test generated",
        path.display()
    ))
}

/// Renders the shared part of a facade (`src/shared.rs`) from the one
/// template, for facade `name` (`"ensure"`) with C prefix `prefix` (`"tse"`).
fn render_shared_abi(name: &str, prefix: &str) -> String {
    include_str!("../templates/shared_abi.rs.in")
        .replace("__p__", prefix)
        .replace("__P__", &prefix.to_ascii_uppercase())
        .replace("__f__", name)
}

fn header_path(name: &str) -> PathBuf {
    workspace().join(format!("ffi-{name}/include/tstate_{name}.h"))
}

#[test]
fn shared_abi_sources_are_current() {
    let errs: Vec<String> = FACADES
        .iter()
        .filter_map(|(name, prefix)| {
            let want = render_shared_abi(name, prefix);
            check_file(
                &workspace().join(format!("ffi-{name}/src/shared.rs")),
                &want,
            )
            .err()
        })
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// The inline scaffolding every header's trailer carries (the TLS-model
/// macro, the closed block, the cached address, the adopt step), rendered
/// from the one template for facade `name` with C prefix `prefix`.
fn render_inline_scaffold(name: &str, prefix: &str) -> String {
    include_str!("../templates/inline_scaffold.h.in")
        .replace("__p__", prefix)
        .replace("__P__", &prefix.to_ascii_uppercase())
        .replace("__F__", &name.to_ascii_uppercase())
}

/// The scaffolding in each facade's `cbindgen.toml` trailer is the
/// template's (run this before `headers_are_current` when blessing:
/// `TSTATE_BLESS=1` rewrites the trailer, then the header).
#[test]
fn inline_scaffolds_are_current() {
    const BEGIN: &str = "/* inline scaffold: GENERATED";
    const END: &str = "/* end of inline scaffold */\n";
    let errs: Vec<String> = FACADES
        .iter()
        .filter_map(|(name, prefix)| {
            let path = workspace().join(format!("ffi-{name}/cbindgen.toml"));
            let have = std::fs::read_to_string(&path).unwrap();
            let Some(i) = have.find(BEGIN) else {
                return Some(format!("{}: no inline scaffold", path.display()));
            };
            let Some(j) = have[i..].find(END).map(|j| i + j + END.len()) else {
                return Some(format!(
                    "{}: the inline scaffold does not end",
                    path.display()
                ));
            };
            let want = format!(
                "{}{}{}",
                &have[..i],
                render_inline_scaffold(name, prefix),
                &have[j..]
            );
            check_file(&path, &want).err()
        })
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// Rustdoc link syntax, which cbindgen copies from the doc comments, made
/// plain for C readers: "[`tsg_release`]" → "`tsg_release`",
/// "[`crate::Holder`]" → "`Holder`".
fn for_c(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    let mut rest = header;
    while let Some(i) = rest.find("[`") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("`]") {
            Some(j) if !after[..j].contains('\n') => {
                let name = &after[..j];
                let name = name.rsplit("::").next().unwrap_or(name);
                out.push('`');
                out.push_str(name);
                out.push('`');
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str("[`");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn doc_links_are_made_plain_for_c() {
    assert_eq!(
        for_c("see [`crate::Holder`] and [`tsg_release`]; `a[0]`"),
        "see `Holder` and `tsg_release`; `a[0]`"
    );
    for (name, _) in FACADES {
        let h = std::fs::read_to_string(header_path(name)).unwrap();
        assert!(!h.contains("[`"), "{name}'s header has rustdoc link syntax");
    }
}

#[test]
fn headers_are_current() {
    let errs: Vec<String> = FACADES
        .iter()
        .filter_map(|(name, _)| {
            let crate_dir = workspace().join(format!("ffi-{name}"));
            let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
            let mut out = Vec::new();
            cbindgen::Builder::new()
                .with_crate(&crate_dir)
                .with_config(config)
                .generate()
                .expect("cbindgen")
                .write(&mut out);
            let header = for_c(&String::from_utf8(out).unwrap());
            check_file(&header_path(name), &header).err()
        })
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn headers_compile_alone_as_c11_and_cpp17() {
    let dir = std::env::temp_dir().join(format!("tstate-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _) in FACADES {
        for (compiler, std, ext) in [("gcc", "-std=c11", "c"), ("g++", "-std=c++17", "cpp")] {
            for names in [false, true] {
                let src = dir.join(format!("{name}_{names}.{ext}"));
                let define = if names && name == "guard" {
                    "#define TSTATE_GUARD_PEP788_NAMES\n".to_string()
                } else if names {
                    format!("#define TSTATE_{}_DISCUSSION_NAMES\n", name.to_uppercase())
                } else {
                    String::new()
                };
                std::fs::write(
                    &src,
                    format!(
                        "{define}#include \"tstate_{name}.h\"\nint main(void) {{ return 0; }}\n"
                    ),
                )
                .unwrap();
                let out = Command::new(compiler)
                    .args([
                        std,
                        "-Wall",
                        "-Wextra",
                        "-Werror",
                        "-pedantic",
                        "-fsyntax-only",
                        "-I",
                    ])
                    .arg(header_path(name).parent().unwrap())
                    .arg(&src)
                    .output()
                    .unwrap_or_else(|e| panic!("{compiler} not runnable: {e}"));
                assert!(
                    out.status.success(),
                    "{name} header with {compiler} {std}:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The Python package's C API (`tstate_capi.h`, the capsule's table,
/// `tstate_capi.pxd`) is current with the committed facade headers.
#[test]
fn python_capi_files_are_current() {
    use tstate_conformance::capi;
    let headers: Vec<capi::Header> = capi::FACADES
        .iter()
        .map(|(name, prefix)| {
            let text = std::fs::read_to_string(header_path(name)).unwrap();
            capi::parse(name, prefix, &text).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    for h in &headers {
        assert!(
            h.protos.len() >= 20,
            "{}: {} functions",
            h.design,
            h.protos.len()
        );
    }
    let (header, table, pxd) = capi::render(&headers);
    let py = workspace().join("python");
    let errs: Vec<String> = [
        (py.join("py/tstate/include/tstate_capi.h"), header),
        (py.join("src/capi_table.rs"), table),
        (py.join("py/tstate/include/tstate_capi.pxd"), pxd),
    ]
    .iter()
    .filter_map(|(path, want)| check_file(path, want).err())
    .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// `tstate_capi.h` compiles as C11 and C++17 with `-Wall -Wextra -Werror`
/// against every CPython found, alone and with each design's opt-in
/// spellings; two spellings in one file and a facade header next to it
/// are `#error`s.
#[test]
fn python_capi_header_compiles_as_c11_and_cpp17() {
    let found = tstate_conformance::pythons::find();
    if found.is_empty() {
        eprintln!("no CPython headers found: skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tstate-capi-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let include = workspace().join("python/py/tstate/include");
    let compile = |py: &tstate_conformance::pythons::Python, body: &str, tag: &str, cxx: bool| {
        let (compiler, std, ext) = if cxx {
            ("g++", "-std=c++17", "cpp")
        } else {
            ("gcc", "-std=c11", "c")
        };
        let src = dir.join(format!("{tag}_{}.{ext}", py.short()));
        std::fs::write(&src, format!("{body}\nint main(void) {{ return 0; }}\n")).unwrap();
        Command::new(compiler)
            .args([std, "-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
            .arg(format!("-I{}", py.include.display()))
            .arg(format!("-I{}", include.display()))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("{compiler} not runnable: {e}"))
    };
    for py in &found {
        let mut variants = vec![("plain".to_string(), String::new())];
        for (name, _) in FACADES {
            let m = if name == "guard" {
                "TSTATE_GUARD_PEP788_NAMES".to_string()
            } else {
                format!("TSTATE_{}_DISCUSSION_NAMES", name.to_uppercase())
            };
            variants.push((name.to_string(), format!("#define {m}\n")));
        }
        for (tag, define) in &variants {
            for cxx in [false, true] {
                let body = format!("{define}#include \"tstate_capi.h\"");
                let out = compile(py, &body, tag, cxx);
                assert!(
                    out.status.success(),
                    "tstate_capi.h ({tag}, {}, c++: {cxx}):\n{}",
                    py.short(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let two = "#define TSTATE_ENSURE_DISCUSSION_NAMES\n#define TSTATE_HANDLE_DISCUSSION_NAMES\n#include \"tstate_capi.h\"";
        let out = compile(py, two, "two", false);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("#error"),
            "two designs' spellings must be an #error"
        );
        let facade = format!(
            "#include \"{}\"\n#include \"tstate_capi.h\"",
            header_path("ensure").display()
        );
        let out = compile(py, &facade, "facade", false);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("replaces the facade headers"),
            "a facade header next to tstate_capi.h must be an #error"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
