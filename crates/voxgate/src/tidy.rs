//! Tidy tests: the layering rules of ARCHITECTURE.md, checked on the source tree (as
//! rust-analyzer's `tidy` does), so they hold by construction rather than by review.
//!
//! The rules:
//! - nothing outside `http/` names axum, hyper, hyper_util, tower or tower_http;
//! - `config` names nothing from the crate;
//! - a module never names a module of a higher layer ([`LAYERS`], lowest first);
//! - there is no cycle between top-level modules;
//! - no error envelope is written by hand (every code comes from the table in `error.rs`).
//!
//! For example, adding this line to `src/service/speech/mod.rs`:
//!
//! ```text
//! use axum::Router;
//! ```
//!
//! fails `the_tree_keeps_its_layers` with
//! `service/speech/mod.rs:1: names axum outside http/`, and
//! `a_service_that_imports_axum_is_caught` proves the check does catch it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may name modules of its own layer or
/// lower ones, never higher; within a layer, no cycles.
const LAYERS: &[&[&str]] = &[
    &["config", "util"],
    &["error", "observe", "audio"],
    &["engines"],
    &["data"],
    &["identity"],
    &["limits"],
    &["service"],
    &["http", "wyoming"],
    &["cli"],
];

/// Crates only the HTTP front door may use.
const HTTP_CRATES: &[&str] = &["axum", "hyper", "hyper_util", "tower", "tower_http"];

/// The front doors: they call services and never meter, admit or audit themselves.
const FRONT_DOORS: &[&str] = &["http", "wyoming"];

/// What only `service/` (and the layers below it) may name: the means of admission,
/// reservation, settlement and audit.
const METERING: &[&str] = &[
    "quota::",
    "QuotaHold",
    "admit_caller",
    "admit_engine",
    "services.admit(",
    "services.reserve(",
    "state.admit(",
    "state.reserve(",
    "quota_refused",
    "audit_denial",
    ".gate.",
    "AuditEvent",
    "audit.record",
    ".settle(",
];

/// Files outside the layers: the crate root, the binary, this test.
const EXEMPT: &[&str] = &["lib.rs", "main.rs", "tidy.rs"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to (`service/speech/mod.rs` → `service`).
fn module_of(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Code lines only: comments are skipped (a doc link to a higher layer imports nothing).
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Every `crate::x` a line names.
fn crate_refs(line: &str) -> Vec<&str> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: &str = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if !name.is_empty() {
            refs.push(name);
        }
    }
    refs
}

/// Whether a line names one of `crates` as a path root (`axum::…`, `use tower::…`).
fn names_crate(line: &str, krate: &str) -> bool {
    let pattern = format!("{krate}::");
    let mut start = 0;
    while let Some(i) = line[start..].find(&pattern) {
        let at = start + i;
        let before = line[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return true;
        }
        start = at + pattern.len();
    }
    false
}

/// Every broken rule in `files` (paths relative to `src/`, with their source).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (path, source) in files {
        if EXEMPT.contains(&path.as_str()) {
            continue;
        }
        let module = module_of(path);
        let Some(layer) = layer_of(module) else {
            found.push(format!(
                "{path}: module `{module}` is in no layer of tidy::LAYERS"
            ));
            continue;
        };
        if FRONT_DOORS.contains(&module) {
            // Whitespace removed, so a call chain rustfmt split over lines is seen whole.
            let compact: String = code_lines(source)
                .map(|(_, line)| line)
                .collect::<String>()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            for name in METERING {
                if compact.contains(name) {
                    found.push(format!(
                        "{path}: the front door {module} names {name} (metering and audit belong to service/)"
                    ));
                }
            }
        }
        for (n, line) in code_lines(source) {
            if module != "http" {
                for krate in HTTP_CRATES {
                    if names_crate(line, krate) {
                        found.push(format!("{path}:{n}: names {krate} outside http/"));
                    }
                }
            }
            for target in crate_refs(line) {
                if target == module {
                    continue;
                }
                if module == "config" {
                    found.push(format!("{path}:{n}: config names crate::{target}"));
                    continue;
                }
                match layer_of(target) {
                    Some(l) if l > layer => found.push(format!(
                        "{path}:{n}: {module} (layer {layer}) names crate::{target} (layer {l}), a higher layer"
                    )),
                    Some(_) => {
                        edges.entry(module).or_default().insert(target);
                    }
                    None => {}
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        found.push(format!(
            "import cycle between top-level modules: {}",
            cycle.join(" → ")
        ));
    }
    found
}

/// A cycle in the module graph, if there is one.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|n| *n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|start| visit(start, edges, &mut Vec::new(), &mut done))
}

/// Every `.rs` file under `dir`, relative to it.
fn sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read source dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

fn tree() -> Vec<(String, String)> {
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn the_tree_keeps_its_layers() {
    let files = tree();
    assert!(files.len() > 50, "the source tree was found");
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "layering rules broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_service_that_imports_axum_is_caught() {
    let mut files = tree();
    let (_, speech) = files
        .iter_mut()
        .find(|(p, _)| p == "service/speech/mod.rs")
        .expect("the speech service");
    speech.insert_str(0, "use axum::Router;\n");
    let found = violations(&files);
    assert_eq!(
        found,
        vec!["service/speech/mod.rs:1: names axum outside http/".to_owned()]
    );
}

#[test]
fn a_front_door_that_meters_for_itself_is_caught() {
    let file = |path: &str, source: &str| (path.to_owned(), source.to_owned());
    let found = violations(&[
        file(
            "wyoming/session.rs",
            "let hold = crate::limits::quota::reserve(x);",
        ),
        file(
            "http/speech.rs",
            "state.audit.record(actor, None, event).await;",
        ),
        file(
            "wyoming/mod.rs",
            "state\n    .audit\n    .record(actor, None, event)\n    .await;",
        ),
        file(
            "service/speech/mod.rs",
            "let hold: QuotaHold = self.reserve(p, a).await?;",
        ),
    ]);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("wyoming names quota::"), "{}", found[0]);
    assert!(found[1].contains("http names audit.record"), "{}", found[1]);
    assert!(
        found[2].contains("wyoming names audit.record"),
        "{}",
        found[2]
    );
}

#[test]
fn higher_layers_configs_and_cycles_are_caught() {
    let file = |path: &str, source: &str| (path.to_owned(), source.to_owned());
    let found = violations(&[
        file("data/cache.rs", "use crate::service::Services;"),
        file("config/mod.rs", "pub fn f() -> crate::util::X { todo!() }"),
        file("error.rs", "use crate::observe::Metrics;"),
        file("observe/mod.rs", "use crate::error::Code;"),
        file("engines/mod.rs", "// a comment naming crate::http is fine"),
    ]);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("a higher layer"), "{}", found[0]);
    assert!(
        found[1].contains("config names crate::util"),
        "{}",
        found[1]
    );
    assert!(found[2].contains("import cycle"), "{}", found[2]);
}

/// Error codes are rows of the one table: every constructor of an error takes a `Code`, so
/// the only way around the table is an envelope written by hand (as `tls.rs` once did). No
/// string outside the error modules spells the envelope's fields.
#[test]
fn no_error_envelope_is_written_by_hand() {
    let mut found = Vec::new();
    for (path, source) in tree() {
        if matches!(path.as_str(), "error.rs" | "http/error.rs") || EXEMPT.contains(&path.as_str())
        {
            continue;
        }
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code_lines(code) {
            if line.contains("\\\"code\\\"")
                || line.contains("\"code\":")
                || line.contains("\"error\":{")
            {
                found.push(format!("{path}:{n}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "hand-written error envelopes:\n{}",
        found.join("\n")
    );
}
