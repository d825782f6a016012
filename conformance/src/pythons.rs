//! The CPython installations on this machine (3.9–3.13), for everything
//! that runs on real CPython: the conformance cases on the CPython backend,
//! the fifteen observed scenarios, the extension-module exit race.
//!
//! Each minor version is looked for, in order, under pyenv
//! (`$PYENV_ROOT`, else `~/.pyenv`: `versions/3.X.*/bin/python3.X`), then on
//! `PATH` (`python3.X`), then in `/usr/bin` and `/usr/local/bin`. An
//! installation counts only if it has a shared libpython (`LIBDIR` +
//! `INSTSONAME` from its `sysconfig`) and its headers. A version that is
//! absent is skipped, and the callers print which ran.
//! `TSTATE_PYTHONS=3.11,3.13` limits the search to those versions.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One CPython installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// `(3, minor)`.
    pub version: (u32, u32),
    /// The full version (`3.11.7`).
    pub full_version: String,
    /// The interpreter executable.
    pub exe: PathBuf,
    /// The shared libpython (`libpython3.X.so.1.0`).
    pub libpython: PathBuf,
    /// Its directory (for `-L` and `-Wl,-rpath`).
    pub libdir: PathBuf,
    /// The directory holding `Python.h`.
    pub include: PathBuf,
}

impl Python {
    /// `"3.11"`.
    pub fn short(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    /// Compiler flags to build an embedding program or an extension module
    /// against this CPython (`-I…`).
    pub fn cflags(&self) -> Vec<String> {
        vec![format!("-I{}", self.include.display())]
    }

    /// Linker flags to embed this CPython (`-L… -lpython3.X -Wl,-rpath,…`).
    pub fn embed_ldflags(&self) -> Vec<String> {
        vec![
            format!("-L{}", self.libdir.display()),
            format!("-lpython{}", self.short()),
            format!("-Wl,-rpath,{}", self.libdir.display()),
            "-ldl".into(),
            "-lm".into(),
            "-lpthread".into(),
        ]
    }
}

/// The minor versions looked for.
pub const MINORS: [u32; 5] = [9, 10, 11, 12, 13];

fn pyenv_root() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("PYENV_ROOT") {
        return Some(PathBuf::from(r));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv"))
}

fn candidates(minor: u32) -> Vec<PathBuf> {
    let name = format!("python3.{minor}");
    let mut v = Vec::new();
    if let Some(root) = pyenv_root()
        && let Ok(rd) = std::fs::read_dir(root.join("versions"))
    {
        let mut dirs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("3.{minor}.")) && !n.ends_with('t'))
            })
            .collect();
        dirs.sort();
        dirs.reverse(); // newest patch release first
        v.extend(dirs.into_iter().map(|d| d.join("bin").join(&name)));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if !d.to_string_lossy().contains("shims") {
                v.push(d.join(&name));
            }
        }
    }
    v.push(PathBuf::from("/usr/bin").join(&name));
    v.push(PathBuf::from("/usr/local/bin").join(&name));
    v
}

const PROBE: &str = "import sys, sysconfig, os
v = sys.version_info
libdir = sysconfig.get_config_var('LIBDIR') or ''
so = sysconfig.get_config_var('INSTSONAME') or ''
inc = sysconfig.get_paths()['include']
gil = sysconfig.get_config_var('Py_GIL_DISABLED') or 0
print(f'{v[0]}\\t{v[1]}\\t{sys.version.split()[0]}\\t{libdir}\\t{so}\\t{inc}\\t{gil}')";

fn probe(exe: &Path) -> Option<Python> {
    if !exe.is_file() {
        return None;
    }
    let o = Command::new(exe).args(["-I", "-c", PROBE]).output().ok()?;
    if !o.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&o.stdout);
    let f: Vec<&str> = line.trim().split('\t').collect();
    if f.len() != 7 || f[6] != "0" {
        return None; // free-threaded builds are not handled here
    }
    let version = (f[0].parse().ok()?, f[1].parse().ok()?);
    let libdir = PathBuf::from(f[3]);
    let mut libpython = libdir.join(f[4]);
    if !libpython.is_file() {
        // Debian: LIBDIR is /usr/lib, the library in the multiarch dir
        let alt = PathBuf::from("/usr/lib/x86_64-linux-gnu").join(f[4]);
        if alt.is_file() {
            libpython = alt;
        } else {
            return None;
        }
    }
    let include = PathBuf::from(f[5]);
    if !include.join("Python.h").is_file() {
        return None;
    }
    Some(Python {
        version,
        full_version: f[2].to_string(),
        exe: exe.to_path_buf(),
        libdir: libpython.parent()?.to_path_buf(),
        libpython,
        include,
    })
}

/// Every CPython 3.9–3.13 found (one per minor version), oldest first.
pub fn find() -> Vec<Python> {
    let wanted: Option<Vec<String>> = std::env::var("TSTATE_PYTHONS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    MINORS
        .iter()
        .filter(|m| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| x == &format!("3.{m}")))
        })
        .filter_map(|&m| {
            candidates(m)
                .into_iter()
                .find_map(|c| probe(&c).filter(|p| p.version == (3, m)))
        })
        .collect()
}

/// A one-line account of what was found and what was not, for reports.
pub fn summary(found: &[Python]) -> String {
    let mut parts = Vec::new();
    for m in MINORS {
        match found.iter().find(|p| p.version == (3, m)) {
            Some(p) => parts.push(format!("{} ({})", p.full_version, p.exe.display())),
            None => parts.push(format!("3.{m}: not found (skipped)")),
        }
    }
    parts.join("; ")
}
