//! The shape of the product's source, held to the limits in
//! `docs/architecture.md`: no product file over 800 lines and no function
//! over 80 (tests aside), and no import cycle between the library's
//! top-level modules. The checks read `src/` as text, the way a reviewer
//! does; each failure names the file, the line and the limit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 80;

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The product lines of a file: all of it up to its `#[cfg(test)] mod
/// tests`, and nothing of a file that is itself a test module.
fn product_lines(path: &Path) -> Vec<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Whether `line` starts a function item, and its indentation.
fn fn_start(line: &str) -> Option<usize> {
    let indent = line.len() - line.trim_start().len();
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    rest = rest.strip_prefix("extern \"C\" ").unwrap_or(rest);
    rest.starts_with("fn ").then_some(indent)
}

/// Functions of `lines` longer than [`MAX_FN_LINES`]: (first line, length).
/// A body ends at the first `}` at the indentation of its `fn`; a
/// declaration without a body ends at its `;`.
fn long_functions(lines: &[String]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(indent) = fn_start(line) else {
            continue;
        };
        let close = format!("{}}}", " ".repeat(indent));
        let opens = lines[i..]
            .iter()
            .position(|l| l.contains('{') || l.trim_end().ends_with(';'))
            .map_or(lines.len(), |k| i + k);
        let one_line = opens < lines.len()
            && (lines[opens].trim_end().ends_with(';') || lines[opens].trim_end().ends_with('}'));
        let end = if one_line {
            opens
        } else {
            lines[opens..]
                .iter()
                .position(|l| *l == close)
                .map_or(lines.len(), |k| opens + k)
        };
        let len = end - i + 1;
        if len > MAX_FN_LINES {
            out.push((i + 1, len));
        }
    }
    out
}

#[test]
fn no_product_file_is_over_800_lines() {
    let mut over = Vec::new();
    for path in rust_files(&src()) {
        let n = product_lines(&path).len();
        if n > MAX_FILE_LINES {
            over.push(format!("{}: {n} lines", path.display()));
        }
    }
    assert!(
        over.is_empty(),
        "split these files by role (limit {MAX_FILE_LINES} lines, tests aside):\n{}",
        over.join("\n")
    );
}

#[test]
fn no_product_function_is_over_80_lines() {
    let mut over = Vec::new();
    for path in rust_files(&src()) {
        for (line, len) in long_functions(&product_lines(&path)) {
            over.push(format!("{}:{line}: {len} lines", path.display()));
        }
    }
    assert!(
        over.is_empty(),
        "split these functions into named steps (limit {MAX_FN_LINES} lines):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_length_check_sees_a_long_function() {
    let mut lines = vec!["    pub fn long(&self) {".to_owned()];
    lines.extend((0..MAX_FN_LINES).map(|i| format!("        let x{i} = {i};")));
    lines.push("    }".to_owned());
    lines.push("    fn short() {}".to_owned());
    assert_eq!(long_functions(&lines), vec![(1, MAX_FN_LINES + 2)]);
}

/// The top-level module a path under `src/` belongs to (`job` for
/// `src/job/barrier.rs`), or `None` for the crate roots.
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Which top-level modules each one names through `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&src()) {
        let Some(from) = top_module(&path) else {
            continue;
        };
        let deps = graph.entry(from.clone()).or_default();
        for line in product_lines(&path) {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',') {
                        let head = item.trim().split("::").next().unwrap_or("").trim();
                        if !head.is_empty() && head != from {
                            deps.insert(head.to_owned());
                        }
                    }
                } else if !name.is_empty() && name != from {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the module graph is empty: {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that depend on each other (move the shared part to a leaf):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle_through(&graph, "a"), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle_through(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
