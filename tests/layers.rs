//! The layers of `src/` point one way, down, and no two files import each other in a
//! circle. Each top-level module has a rank; a module may use only modules of a lower
//! rank (those of rank 0 use nothing of the crate). The tools (`cli`) are on top: the
//! runtime never imports them. Test modules (`#[cfg(test)]`) and comments are left out.
//!
//! Run it alone with `cargo test --test layers`; it reads the sources, builds nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lower first. Equal ranks may not use each other.
const RANKS: [(&str, u32); 16] = [
    ("record", 0),
    ("settings", 0),
    ("storable", 0),
    ("failure", 0),
    ("payload_fields", 0),
    ("telemetry", 1),
    ("db", 2),
    ("projections", 3),
    ("stages", 4),
    ("ops", 5),
    ("offsets", 6),
    ("sinks", 7),
    ("source", 8),
    ("pipeline", 9),
    ("cli", 10),
    ("main", 11),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/sinks/lake/writer.rs` -> `["sinks", "lake", "writer"]` (a `mod.rs` is its folder).
fn module_path(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).expect("under src/").with_extension("");
    let mut parts: Vec<String> =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its test module and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every path the code names after `crate::` or `super::`, as module segments from the
/// crate root (`crate::{a, b}` gives both).
fn used_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", me[..me.len() - 1].to_vec())] {
        for (i, _) in code.match_indices(prefix) {
            if i > 0 && code[..i].ends_with(ident) {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                for name in group.split('}').next().unwrap_or_default().split(',') {
                    let name: String = name.trim().chars().take_while(|c| ident(*c)).collect();
                    if !name.is_empty() {
                        out.push([base.clone(), vec![name]].concat());
                    }
                }
                continue;
            }
            let path: String = rest.chars().take_while(|c| ident(*c) || *c == ':').collect();
            let segments = path.split("::").filter(|s| !s.is_empty()).map(str::to_string);
            out.push(base.iter().cloned().chain(segments).collect());
        }
    }
    out
}

struct Crate {
    /// Module path -> the modules (files) it uses.
    uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn load() -> Crate {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_path(f), f.clone())).collect();
    let resolve = |path: &[String]| {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))
    };
    let mut uses = BTreeMap::new();
    for (me, file) in &modules {
        if me.is_empty() || me == &["lib"] {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source");
        let used: BTreeSet<Vec<String>> = used_paths(&code(&text), me)
            .iter()
            .filter_map(|p| resolve(p))
            // A module's own items and its parent's (`mod.rs`) are not an edge.
            .filter(|t| t != me && !(t.len() < me.len() && me.starts_with(t)))
            .collect();
        uses.insert(me.clone(), used);
    }
    Crate { uses }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let krate = load();
    let mut upward = Vec::new();
    for (me, used) in &krate.uses {
        let top = me[0].as_str();
        let Some(mine) = rank(top) else {
            upward.push(format!("src/{} has no rank in tests/layers.rs: give it one", top));
            continue;
        };
        for target in used {
            let theirs = rank(&target[0]).unwrap_or(u32::MAX);
            if target[0] != top && (theirs >= mine || mine == 0) {
                upward.push(format!("{} uses {}", me.join("::"), target.join("::")));
            }
        }
    }
    assert!(upward.is_empty(), "imports that do not point down:\n{}", upward.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let krate = load();
    // Depth-first search with colours; a grey target closes a circle.
    let mut colour: BTreeMap<&Vec<String>, u8> = BTreeMap::new();
    let mut circles = Vec::new();
    fn visit<'a>(
        node: &'a Vec<String>,
        krate: &'a Crate,
        colour: &mut BTreeMap<&'a Vec<String>, u8>,
        path: &mut Vec<&'a Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        colour.insert(node, 1);
        path.push(node);
        for next in krate.uses.get(node).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(0) {
                0 if krate.uses.contains_key(next) => visit(next, krate, colour, path, circles),
                1 => {
                    let from = path.iter().position(|p| *p == next).unwrap_or(0);
                    let names: Vec<String> = path[from..].iter().map(|p| p.join("::")).collect();
                    circles.push(format!("{} -> {}", names.join(" -> "), next.join("::")));
                }
                _ => {}
            }
        }
        path.pop();
        colour.insert(node, 2);
    }
    for node in krate.uses.keys() {
        if colour.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &krate, &mut colour, &mut Vec::new(), &mut circles);
        }
    }
    assert!(circles.is_empty(), "modules in a circle:\n{}", circles.join("\n"));
}
