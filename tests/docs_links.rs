//! The docs never point at something that is not there: every relative link of the
//! README and `docs/*.md` resolves, every repository path they name in backticks exists,
//! nothing points outside the repository, and the README stays a front door (at most
//! 300 lines).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

/// Repository paths named in backticks: `src/...`, `tests/...`, top-level files.
fn named_paths(text: &str) -> Vec<String> {
    const TOP: [&str; 12] = [
        "src/",
        "tests/",
        "scripts/",
        "docs/",
        "contracts/",
        "migrations/",
        "settings/",
        "bench/",
        "ops/",
        "fixtures/",
        ".ci/",
        "lake/",
    ];
    const FILES: [&str; 6] = [
        "Makefile",
        "Dockerfile",
        "docker-compose.yml",
        "diesel.toml",
        "Cargo.toml",
        "rustfmt.toml",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| TOP.iter().any(|p| t.starts_with(p)) || FILES.contains(t))
        .filter(|t| !t.contains(['*', '{', '<', '$', '=']) && !t.contains(char::is_whitespace))
        .filter(|t| !t.starts_with("lake/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_link_and_named_path_of_the_docs_exists() {
    let mut missing = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a readable page");
        let shown = page.strip_prefix(repo()).unwrap().display().to_string();
        assert!(!text.contains("../shared"), "{shown} points outside the repository");
        for link in links(&text) {
            if link.starts_with("http") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap();
            if !page.parent().unwrap().join(file).exists() {
                missing.push(format!("{shown}: link {link}"));
            }
        }
        for path in named_paths(&text) {
            if !repo().join(Path::new(path.trim_end_matches('/'))).exists() {
                missing.push(format!("{shown}: path {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "the docs name what is not there:\n{}", missing.join("\n"));
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; the rest belongs in docs/");
    for command in ["make demo", "make test"] {
        assert!(readme.contains(command), "the Quick start names `{command}`");
    }
}
