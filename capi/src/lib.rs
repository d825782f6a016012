//! The C libraries of the four facades, built and installed the way a C
//! library is (the conventions of cargo-c, owned by the project so that a
//! fresh machine needs nothing but cargo and a C compiler).
//!
//! The facade crates are plain Rust libraries (`crate-type = ["lib"]`), so a
//! Rust crate depending on one never builds C artifacts. [`build`] makes a
//! facade's C artifacts on demand with
//! `cargo rustc --crate-type staticlib,cdylib` in a target directory of its
//! own (`<target>/capi`, so that it never waits on, nor invalidates, the
//! build that runs it); [`install`] copies them into a prefix:
//!
//! | file | what |
//! |---|---|
//! | `include/tstate_<design>.h` | the facade's header |
//! | `lib/libtstate_ffi_<design>.a` | static library |
//! | `lib/libtstate_ffi_<design>.so.<major>.<minor>.<patch>` | shared library, SONAME `libtstate_ffi_<design>.so.<abi>` |
//! | `lib/libtstate_ffi_<design>.so.<abi>`, `….so` | symlinks (run-time and link-time names) |
//! | `lib/pkgconfig/tstate-ffi-<design>.pc` | pkg-config, shared linking |
//! | `lib/pkgconfig/tstate-ffi-<design>-static.pc` | pkg-config, static linking (the archive by path plus the Rust runtime's system libraries) |
//!
//! `<abi>` follows Cargo's compatibility rule: the major version, or
//! `0.<minor>` before 1.0 (a 0.2 release may break the 0.1 ABI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The four designs, by the suffix of their crate (`tstate-ffi-<design>`).
pub const FACADES: [&str; 4] = ["ensure", "handle", "activate", "guard"];

/// The facades' version (the workspace version: every crate shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The workspace this crate was built from.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("capi/ sits in the workspace")
        .to_path_buf()
}

/// `<abi>` of the SONAME: the major version, or `0.<minor>` before 1.0.
pub fn abi_version() -> String {
    let mut parts = VERSION.split('.');
    let (major, minor) = (parts.next().unwrap_or("0"), parts.next().unwrap_or("0"));
    if major == "0" {
        format!("0.{minor}")
    } else {
        major.to_string()
    }
}

/// `libtstate_ffi_<design>.so.<abi>`.
pub fn soname(facade: &str) -> String {
    format!("libtstate_ffi_{facade}.so.{}", abi_version())
}

/// A Cargo profile to build with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `dev` (artifacts in `debug/`).
    Dev,
    /// `release`.
    Release,
}

impl Profile {
    /// The profile the calling code was compiled with (`Dev` when debug
    /// assertions are on).
    pub fn current() -> Self {
        if cfg!(debug_assertions) {
            Profile::Dev
        } else {
            Profile::Release
        }
    }

    fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// One facade's C artifacts in the build tree.
#[derive(Clone, Debug)]
pub struct Built {
    /// The design (`ensure`, …).
    pub facade: String,
    /// `libtstate_ffi_<design>.a`.
    pub staticlib: PathBuf,
    /// `libtstate_ffi_<design>.so` (SONAME [`soname`]).
    pub cdylib: PathBuf,
    /// The header, `ffi-<design>/include/tstate_<design>.h`.
    pub header: PathBuf,
    /// What a program linking the static library must add (the Rust
    /// runtime's system libraries, as rustc reports them).
    pub native_static_libs: String,
}

/// The target directory [`build`] uses: `$CARGO_TARGET_DIR/capi`, else
/// `<workspace>/target/capi` (a relative `CARGO_TARGET_DIR` is taken from
/// the workspace root).
pub fn target_dir() -> PathBuf {
    // a relative CARGO_TARGET_DIR is taken from the workspace root (where
    // cargo is usually run; the nested cargo runs there too)
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| workspace().join(d))
        .unwrap_or_else(|| workspace().join("target"))
        .join("capi")
}

/// Builds `facade`'s static and shared library with `profile` (once per
/// process; cargo makes a rebuild of a fresh tree a no-op).
pub fn build(facade: &str, profile: Profile) -> Result<Built, String> {
    static DONE: Mutex<Vec<(String, Profile, Built)>> = Mutex::new(Vec::new());
    if !FACADES.contains(&facade) {
        return Err(format!("no facade {facade:?} (one of {FACADES:?})"));
    }
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, b)) = done.iter().find(|(f, p, _)| f == facade && *p == profile) {
        return Ok(b.clone());
    }
    let b = build_now(facade, profile)?;
    done.push((facade.to_string(), profile, b.clone()));
    Ok(b)
}

fn build_now(facade: &str, profile: Profile) -> Result<Built, String> {
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace())
        .args([
            "rustc",
            "--quiet",
            "--lib",
            "--crate-type",
            "staticlib,cdylib",
        ])
        .arg("--package")
        .arg(format!("tstate-ffi-{facade}"))
        .args(["--profile", profile.name()])
        .arg("--target-dir")
        .arg(&target)
        .arg("--")
        .arg("-C")
        .arg(format!("link-arg=-Wl,-soname,{}", soname(facade)))
        .args(["--print", "native-static-libs"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("running {}: {e}", Path::new(&cargo).display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "cargo rustc -p tstate-ffi-{facade} failed ({}):\n{stderr}",
            out.status
        ));
    }
    let native_static_libs = stderr
        .lines()
        .find_map(|l| l.split("native-static-libs:").nth(1))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("rustc did not report native-static-libs:\n{stderr}"))?;
    let dir = target.join(profile.dir());
    let built = Built {
        facade: facade.to_string(),
        staticlib: dir.join(format!("libtstate_ffi_{facade}.a")),
        cdylib: dir.join(format!("libtstate_ffi_{facade}.so")),
        header: workspace().join(format!("ffi-{facade}/include/tstate_{facade}.h")),
        native_static_libs,
    };
    for p in [&built.staticlib, &built.cdylib, &built.header] {
        if !p.is_file() {
            return Err(format!("{} missing after the build", p.display()));
        }
    }
    Ok(built)
}

/// Where [`install`] puts things.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The prefix (written into the pkg-config files).
    pub prefix: PathBuf,
    /// Libraries (`<prefix>/lib` unless given).
    pub libdir: PathBuf,
    /// Headers (`<prefix>/include` unless given).
    pub includedir: PathBuf,
}

impl Layout {
    /// `<prefix>/lib` and `<prefix>/include`.
    pub fn new(prefix: &Path) -> Self {
        Layout {
            prefix: prefix.to_path_buf(),
            libdir: prefix.join("lib"),
            includedir: prefix.join("include"),
        }
    }
}

/// The files [`install`] wrote, for one facade.
#[derive(Clone, Debug)]
pub struct Installed {
    /// Every file and symlink written.
    pub files: Vec<PathBuf>,
    /// The pkg-config names (`tstate-ffi-<design>`, `…-static`).
    pub pkg_config: [String; 2],
}

/// Installs `b` into `layout` (directories created as needed; existing
/// files replaced).
pub fn install(b: &Built, layout: &Layout) -> Result<Installed, String> {
    let f = &b.facade;
    let pc_dir = layout.libdir.join("pkgconfig");
    for d in [&layout.libdir, &layout.includedir, &pc_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut files = Vec::new();
    let mut copy = |from: &Path, to: PathBuf| -> Result<(), String> {
        let _ = std::fs::remove_file(&to);
        std::fs::copy(from, &to)
            .map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))?;
        files.push(to);
        Ok(())
    };
    copy(&b.header, layout.includedir.join(format!("tstate_{f}.h")))?;
    copy(
        &b.staticlib,
        layout.libdir.join(format!("libtstate_ffi_{f}.a")),
    )?;
    let real = format!("libtstate_ffi_{f}.so.{VERSION}");
    copy(&b.cdylib, layout.libdir.join(&real))?;
    for (link, target) in [
        (soname(f), real.clone()),
        (format!("libtstate_ffi_{f}.so"), soname(f)),
    ] {
        let l = layout.libdir.join(&link);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(&target, &l).map_err(|e| format!("{}: {e}", l.display()))?;
        files.push(l);
    }
    let name = format!("tstate-ffi-{f}");
    // under the prefix: relative to it (`pkg-config --define-prefix` and
    // moved prefixes work); elsewhere: as given
    let under = |d: &Path| match d.strip_prefix(&layout.prefix) {
        Ok(rel) => format!("${{prefix}}/{}", rel.display()),
        Err(_) => d.display().to_string(),
    };
    let head = format!(
        "prefix={}\nlibdir={}\nincludedir={}\n\n",
        layout.prefix.display(),
        under(&layout.libdir),
        under(&layout.includedir)
    );
    let what = "finalization-safe attach of native threads to CPython interpreters";
    let shared = format!(
        "{head}Name: {name}\nDescription: tstate {f} design: {what} (shared library)\nVersion: {VERSION}\nLibs: -L${{libdir}} -ltstate_ffi_{f}\nCflags: -I${{includedir}}\n"
    );
    let stat = format!(
        "{head}Name: {name}-static\nDescription: tstate {f} design: {what} (static library)\nVersion: {VERSION}\nLibs: ${{libdir}}/libtstate_ffi_{f}.a {}\nCflags: -I${{includedir}}\n",
        b.native_static_libs
    );
    for (n, text) in [(name.clone(), shared), (format!("{name}-static"), stat)] {
        let p = pc_dir.join(format!("{n}.pc"));
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        files.push(p);
    }
    Ok(Installed {
        files,
        pkg_config: [name.clone(), format!("{name}-static")],
    })
}

/// The usage text.
pub const USAGE: &str = "usage: tstate-capi install --prefix DIR [--libdir DIR] [--includedir DIR] [--facade DESIGN]... [--debug]\n       tstate-capi build [--facade DESIGN]... [--debug]";

/// The `tstate-capi` command line (`args` without the program name):
/// what the binary runs, callable from tests. Returns the exit code: 0,
/// 1 (a build or an install failed), 2 (usage).
pub fn run_cli(args: impl IntoIterator<Item = String>) -> u8 {
    let mut args = args.into_iter();
    let Some(cmd) = args.next() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let (mut prefix, mut libdir, mut includedir) = (None, None, None);
    let mut facades = Vec::new();
    let mut profile = Profile::Release;
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{what} needs a value"));
        let r = match a.as_str() {
            "--prefix" => value("--prefix").map(|v| prefix = Some(PathBuf::from(v))),
            "--libdir" => value("--libdir").map(|v| libdir = Some(PathBuf::from(v))),
            "--includedir" => value("--includedir").map(|v| includedir = Some(PathBuf::from(v))),
            "--facade" => value("--facade").map(|v| facades.push(v)),
            "--debug" => {
                profile = Profile::Dev;
                Ok(())
            }
            other => Err(format!("unknown option {other}")),
        };
        if let Err(e) = r {
            eprintln!("{e}\n{USAGE}");
            return 2;
        }
    }
    if facades.is_empty() {
        facades = FACADES.iter().map(|s| s.to_string()).collect();
    }
    let layout = match (cmd.as_str(), prefix) {
        ("install", Some(p)) => {
            let p = std::path::absolute(&p).unwrap_or(p);
            let mut l = Layout::new(&p);
            if let Some(d) = libdir {
                l.libdir = std::path::absolute(&d).unwrap_or(d);
            }
            if let Some(d) = includedir {
                l.includedir = std::path::absolute(&d).unwrap_or(d);
            }
            Some(l)
        }
        ("build", None) => None,
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    for f in &facades {
        let b = match build(f, profile) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("tstate-capi: {e}");
                return 1;
            }
        };
        match &layout {
            None => println!(
                "{f}: {} {} (static link also needs: {})",
                b.staticlib.display(),
                b.cdylib.display(),
                b.native_static_libs
            ),
            Some(l) => match install(&b, l) {
                Ok(i) => {
                    for p in &i.files {
                        println!("installed {}", p.display());
                    }
                }
                Err(e) => {
                    eprintln!("tstate-capi: {e}");
                    return 1;
                }
            },
        }
    }
    0
}
