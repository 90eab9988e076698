//! The layering rule of `docs/ARCHITECTURE.md` ("Layers"), checked on the sources.
//!
//! Every file under `src/` is read; each path that names a module of the crate (`use
//! crate::…`, `crate::x::…` in code, `super::…` that climbs out of its module) is resolved
//! to the top-level module it reaches, and the file's layer must be allowed to import it.
//! Comments, strings and `$crate` in macros are not imports. A path reached through an alias
//! (`use crate::stripe; stripe::client::…`) counts as an import of its whole module, which
//! is stricter than the rule, never looser.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, innermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    /// Stripe, the store, the fleet, payments, and the leaf modules they use.
    Domain,
    /// The Stripe emulator.
    Sim,
    /// The HTTP API.
    Api,
    /// The daemon's start-up and shutdown.
    Daemon,
    /// The command line (and the crate root, which declares the modules).
    Cli,
}

/// Every top-level module and its layer. A module missing here fails the check, so a new
/// module is placed in a layer when it is added.
const MODULES: &[(&str, Layer)] = &[
    ("stripe", Layer::Domain),
    ("store", Layer::Domain),
    ("fleet", Layer::Domain),
    ("payments", Layer::Domain),
    ("config", Layer::Domain),
    ("systemd", Layer::Domain),
    ("metrics", Layer::Domain),
    ("telemetry", Layer::Domain),
    ("clock", Layer::Domain),
    ("sim", Layer::Sim),
    ("api", Layer::Api),
    ("daemon", Layer::Daemon),
    ("cli", Layer::Cli),
];

/// The emulator serialises Stripe's own wire types and nothing else of readerd's.
const SIM_MAY_IMPORT: &[&str] = &["stripe::wire", "stripe::form", "stripe::webhook"];

/// Known breaks of the rule: (file, imported top-level module, why). Each must still occur
/// (a stale entry fails the check), so the list only shrinks.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn layer_of(module: &str) -> Option<Layer> {
    MODULES.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// One import that the rule forbids.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    /// The imported path, from the crate root (`sim::spawn`); empty when the file itself is
    /// in no layer.
    path: String,
    why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.why)
        } else {
            write!(
                f,
                "{}:{}: imports crate::{}: {}",
                self.file, self.line, self.path, self.why
            )
        }
    }
}

/// `#[macro_export]` macros live at the crate root whatever module defines them: each is
/// judged as an import of its defining module.
const ROOT_MACROS: &[(&str, &str)] = &[("string_enum", "stripe")];

/// Whether `from` may import `path` (segments from the crate root); `Err` says why not.
fn allowed(from: Layer, from_module: &str, path: &[String]) -> Result<(), String> {
    let target = ROOT_MACROS
        .iter()
        .find(|(m, _)| *m == path[0])
        .map_or(path[0].as_str(), |(_, module)| module);
    if target == from_module {
        return Ok(());
    }
    let Some(to) = layer_of(target) else {
        return Err(format!(
            "`{target}` is no top-level module the layering rule knows"
        ));
    };
    let ok = match from {
        Layer::Cli => true,
        Layer::Daemon => matches!(to, Layer::Domain | Layer::Api | Layer::Daemon),
        Layer::Api => matches!(to, Layer::Domain | Layer::Api),
        Layer::Domain => to == Layer::Domain,
        Layer::Sim => {
            let joined = path.join("::");
            SIM_MAY_IMPORT
                .iter()
                .any(|p| joined == *p || joined.starts_with(&format!("{p}::")))
        }
    };
    if ok {
        Ok(())
    } else if from == Layer::Sim {
        Err(format!(
            "the emulator may import only {} of the crate",
            SIM_MAY_IMPORT.join(", ")
        ))
    } else {
        Err(format!(
            "the {from:?} layer may not import the {to:?} layer"
        ))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Dollar,
    Other,
}

/// The tokens of a Rust source with their line numbers; comments and literals dropped.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    // Skips a quoted literal whose opening quote is at `i`; returns the index after it.
    let skip_quoted = |mut i: usize, line: &mut usize, quote: char| {
        i += 1;
        while i < c.len() && c[i] != quote {
            if c[i] == '\\' {
                i += 1;
            }
            if i < c.len() && c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or('\0');
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_quoted(i, &mut line, '"');
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if next == '\\' || c.get(i + 2) == Some(&'\'') {
                i = skip_quoted(i, &mut line, '\'');
            } else {
                i += 1;
            }
        } else if (ch == 'r' || (ch == 'b' && next == 'r')) && {
            // A raw string: r"…", r#"…"#, br#"…"#.
            let mut j = i + if ch == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let mut j = i + if ch == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
        } else if ch == 'b' && (next == '"' || next == '\'') {
            i = skip_quoted(i + 1, &mut line, next);
        } else if ident_start(ch) || (ch == 'r' && next == '#') {
            let start = if ch == 'r' && next == '#' { i + 2 } else { i };
            let mut j = start;
            while j < c.len() && ident_char(c[j]) {
                j += 1;
            }
            out.push((Tok::Ident(c[start..j].iter().collect()), line));
            i = j;
        } else if ch.is_ascii_digit() {
            while i < c.len() && (ident_char(c[i]) || c[i] == '.') {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else {
            let tok = match ch {
                ':' if next == ':' => {
                    i += 1;
                    Tok::PathSep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                '*' => Tok::Star,
                '$' => Tok::Dollar,
                _ => Tok::Other,
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// Reads the rest of a path from `toks[i]` (just after `crate::` or the last `super::`),
/// appending each complete path (a `use` group gives several) to `out`.
fn read_paths(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix;
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(name)) => {
                if name != "self" {
                    path.push(name.clone());
                }
                i += 1;
                if toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                out.push(path);
                return;
            }
            Some(Tok::Open) => {
                // A use group: each item at this depth is a path of its own.
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None | Some(Tok::Close) => return,
                        Some(Tok::Comma) => i += 1,
                        _ => {
                            read_paths(toks, i, path.clone(), out);
                            // Skip to the next item at this depth.
                            let mut depth = 0;
                            while let Some((t, _)) = toks.get(i) {
                                match t {
                                    Tok::Open => depth += 1,
                                    Tok::Close if depth == 0 => break,
                                    Tok::Close => depth -= 1,
                                    Tok::Comma if depth == 0 => break,
                                    _ => {}
                                }
                                i += 1;
                            }
                        }
                    }
                }
            }
            // `crate::*` or `super::*`, or the path stops here.
            _ => {
                if !path.is_empty() {
                    out.push(path);
                }
                return;
            }
        }
    }
}

/// The module path of a file under `src/`: `src/sim/state/mod.rs` → `[sim, state]`,
/// `src/lib.rs` → `[]`.
fn module_of(file: &str) -> Vec<String> {
    let rel = file.strip_prefix("src/").unwrap_or(file);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every crate path a source names, from the crate root, with its line.
fn imports(file: &str, src: &str) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(src);
    let file_module = module_of(file);
    // One entry per open brace: the inline module it opens, if any.
    let mut braces: Vec<Option<String>> = Vec::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = &toks[i];
        let prev = i.checked_sub(1).map(|p| &toks[p].0);
        let next_is_sep = toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep);
        match tok {
            Tok::Open => {
                let module = match (i.checked_sub(2).map(|p| &toks[p].0), prev) {
                    (Some(Tok::Ident(kw)), Some(Tok::Ident(name))) if kw == "mod" => {
                        Some(name.clone())
                    }
                    _ => None,
                };
                braces.push(module);
            }
            Tok::Close => {
                braces.pop();
            }
            Tok::Ident(kw)
                if kw == "crate"
                    && next_is_sep
                    && !matches!(prev, Some(Tok::Dollar) | Some(Tok::PathSep)) =>
            {
                let mut paths = Vec::new();
                read_paths(&toks, i + 2, Vec::new(), &mut paths);
                found.extend(paths.into_iter().map(|p| (p, *line)));
            }
            Tok::Ident(kw) if kw == "super" && next_is_sep && prev != Some(&Tok::PathSep) => {
                let mut here = file_module.clone();
                here.extend(braces.iter().flatten().cloned());
                let mut j = i;
                while matches!(&toks.get(j).map(|t| &t.0), Some(Tok::Ident(s)) if s == "super")
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    here.pop();
                    j += 2;
                }
                let mut paths = Vec::new();
                read_paths(&toks, j, here, &mut paths);
                found.extend(paths.into_iter().map(|p| (p, *line)));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found.retain(|(p, _)| !p.is_empty());
    found
}

/// The violations in one source file (`file` relative to the repository, `src/…`).
fn check_source(file: &str, src: &str) -> Vec<Violation> {
    let module = module_of(file);
    let Some(top) = module.first() else {
        return Vec::new(); // lib.rs and main.rs declare and call everything.
    };
    let Some(from) = layer_of(top) else {
        return vec![Violation {
            file: file.to_string(),
            line: 1,
            path: String::new(),
            why: format!(
                "the module `{top}` is in no layer: add it to MODULES and to docs/ARCHITECTURE.md"
            ),
        }];
    };
    imports(file, src)
        .into_iter()
        .filter_map(|(path, line)| {
            allowed(from, top, &path).err().map(|why| Violation {
                file: file.to_string(),
                line,
                path: path.join("::"),
                why,
            })
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_sources_keep_the_layering_rule() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut broken = Vec::new();
    let mut excused = BTreeSet::new();
    for path in &files {
        let file = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let src = std::fs::read_to_string(path).unwrap();
        for v in check_source(&file, &src) {
            let top = v.path.split("::").next().unwrap_or_default();
            match EXCEPTIONS
                .iter()
                .find(|(f, m, _)| *f == v.file && *m == top)
            {
                Some(e) => {
                    excused.insert((e.0, e.1));
                }
                None => broken.push(v.to_string()),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the layering rule of docs/ARCHITECTURE.md is broken:\n{}",
        broken.join("\n")
    );
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .filter(|(f, m, _)| !excused.contains(&(*f, *m)))
        .map(|(f, m, why)| format!("{f} no longer imports {m} ({why}): remove the exception"))
        .collect();
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn a_domain_module_importing_an_outer_layer_is_reported_with_its_line() {
    let src = "//! Bench.\n\nuse crate::store::Registry;\nuse crate::sim::{self, SimConfig};\n\nfn f() {\n    let _ = crate::cli::runtime(\"x\", true);\n}\n";
    let v = check_source("src/payments/bench.rs", src);
    let got: Vec<_> = v.iter().map(|v| (v.line, v.path.as_str())).collect();
    assert_eq!(
        got,
        [(4, "sim"), (4, "sim::SimConfig"), (7, "cli::runtime")],
        "{v:?}"
    );
    assert!(v[0]
        .to_string()
        .starts_with("src/payments/bench.rs:4: imports crate::sim"));
    assert!(v[0]
        .why
        .contains("Domain layer may not import the Sim layer"));
}

#[test]
fn super_that_leaves_the_module_is_resolved_from_the_crate_root() {
    // From payments/mod.rs, `super::` is the crate root; from payments/engine.rs it is
    // payments itself.
    let v = check_source("src/payments/mod.rs", "fn f() { super::api::router(); }\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "api::router");
    let v = check_source(
        "src/fleet/sync.rs",
        "use super::super::{daemon::Shutdown, store::Registry};\nuse super::Fleet;\n",
    );
    let got: Vec<_> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(got, ["daemon::Shutdown"], "{v:?}");
    // An inline module's `super::` is its file's module.
    let src = "pub struct SimArgs;\n#[cfg(test)]\nmod tests {\n    use super::SimArgs;\n    use super::super::cli::x;\n}\n";
    let v = check_source("src/sim/mod.rs", src);
    let got: Vec<_> = v.iter().map(|v| (v.line, v.path.as_str())).collect();
    assert_eq!(got, [(5, "cli::x")], "{v:?}");
}

#[test]
fn the_emulator_may_use_stripe_wire_types_but_not_the_client() {
    let src = "use crate::stripe::wire::{Event, Reader};\nuse crate::stripe::{form, webhook::sign};\nuse crate::stripe::{client::StripeClient, wire};\n";
    let v = check_source("src/sim/routes.rs", src);
    let got: Vec<_> = v.iter().map(|v| (v.line, v.path.as_str())).collect();
    assert_eq!(got, [(3, "stripe::client::StripeClient")], "{v:?}");
}

#[test]
fn each_outer_layer_may_import_only_what_is_beneath_it() {
    let cases = [
        ("src/api/fleet.rs", "use crate::fleet::Fleet;", None),
        (
            "src/api/fleet.rs",
            "use crate::daemon::Daemon;",
            Some("daemon"),
        ),
        ("src/api/fleet.rs", "use crate::sim::spawn;", Some("sim")),
        ("src/daemon.rs", "use crate::api::router;", None),
        ("src/daemon.rs", "use crate::cli::runtime;", Some("cli")),
        ("src/cli/demo.rs", "use crate::{daemon, sim, api};", None),
        ("src/stripe/client.rs", "use crate::fleet::Fleet;", None),
        ("src/metrics.rs", "use crate::api::AppState;", Some("api")),
    ];
    for (file, src, bad) in cases {
        let v = check_source(file, src);
        let got = v
            .first()
            .map(|v| v.path.split("::").next().unwrap().to_string());
        assert_eq!(got.as_deref(), bad, "{file}: {src}: {v:?}");
    }
    let v = check_source("src/newthing.rs", "fn f() {}");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].to_string(),
        "src/newthing.rs:1: the module `newthing` is in no layer: add it to MODULES and to docs/ARCHITECTURE.md"
    );
}

#[test]
fn comments_strings_and_macro_crate_paths_are_not_imports() {
    let src = r####"
//! See [`crate::api`] and crate::cli.
/* crate::sim::spawn /* nested */ crate::daemon */
const A: &str = "use crate::cli::runtime;";
const B: &str = r#"crate::api::x "quoted" "#;
const C: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x }
macro_rules! m { () => { $crate::api::x() }; }
pub(crate) fn g() -> u8 { b'{' }
use crate::store::Registry;
"####;
    let v = check_source("src/fleet/mod.rs", src);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(
        imports("src/fleet/mod.rs", src)
            .into_iter()
            .map(|(p, l)| (p.join("::"), l))
            .collect::<Vec<_>>(),
        [("store::Registry".to_string(), 10)]
    );
}
