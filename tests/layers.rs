//! The layering rules, checked over the source: in `carrier-daemon` every
//! module imports only the layers below its own, and no crate of the
//! workspace has two top-level modules that import each other (directly or
//! round a longer cycle).
//!
//! A reference is any `crate::NAME` or `super::NAME` path that leaves the
//! module, in `use` lines or inline; comments are skipped, and so is test
//! code (`tests.rs`, `*_tests.rs`, and whatever follows `#[cfg(test)]`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The daemon's layers, top to bottom (`../shared/DESIGN.md`, "Layers
/// inside the daemon"). A module may import modules of a lower rank only.
const DAEMON_LAYERS: &[(&str, u32)] = &[
    ("daemon", 9),
    ("config", 8),
    ("ipc", 7),
    ("delivery", 6),
    ("protocols", 5),
    ("overlay", 4),
    ("link", 3),
    ("ledger", 2),
    ("observe", 1),
    ("tasks", 1),
    ("framed", 1),
    ("paths", 1),
    ("notify", 1),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn modules(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            if module != "lib" && module != "main" {
                out.push((module, path));
            }
        }
    }
    out
}

/// The top-level modules `text` (a file of module `own`) refers to.
fn references(text: &str, own: &str, top_level: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().take_while(|line| line.trim() != "#[cfg(test)]") {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `carrier_crate::`
            }
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // In a top-level file, `super::x` is the crate root's `x`.
        if top_level {
            for (i, _) in code.match_indices("super::") {
                let rest = &code[i + "super::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found.remove(own);
    found
}

/// Which top-level modules each top-level module of the crate at `src` uses.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = modules(src);
    let names: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let top_level = path.parent() == Some(src);
        let uses = references(&text, &module, top_level).into_iter().filter(|n| names.contains(n));
        graph.entry(module).or_default().extend(uses);
    }
    graph
}

/// A cycle in `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn daemon_layers_import_only_downwards() {
    let graph = graph(&workspace().join("carrier-daemon/src"));
    let rank: BTreeMap<&str, u32> = DAEMON_LAYERS.iter().copied().collect();
    let mut broken = Vec::new();
    for (module, uses) in &graph {
        let Some(&own) = rank.get(module.as_str()) else {
            broken.push(format!("{module}: not in DAEMON_LAYERS; give it its place in the layers"));
            continue;
        };
        for used in uses {
            match rank.get(used.as_str()) {
                Some(&theirs) if theirs < own => {}
                Some(_) => broken.push(format!("{module} imports {used}, which is not below it")),
                None => broken.push(format!("{module} imports {used}, which is not in DAEMON_LAYERS")),
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    for krate in ["carrier-daemon", "carrier-sdk", "carrier-proto"] {
        let graph = graph(&workspace().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: found only {graph:?}");
        if let Some(cycle) = cycle(&graph) {
            panic!("{krate}: modules import each other: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_check_sees_a_cycle_and_an_upward_import() {
    // The check itself can fail: an upward reference and a cycle are found.
    let uses = references("use crate::ipc::app;\nlet x = crate::delivery::X; // crate::overlay", "protocols", false);
    assert_eq!(uses, BTreeSet::from(["delivery".to_owned(), "ipc".to_owned()]));
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("client".to_owned(), BTreeSet::from(["stream".to_owned()])),
        ("stream".to_owned(), BTreeSet::from(["client".to_owned()])),
    ]
    .into();
    assert_eq!(cycle(&graph), Some(vec!["client".to_owned(), "stream".to_owned(), "client".to_owned()]));
}
