//! The layout keeps what `docs/architecture.md` says of it: the walk of one message names
//! functions that exist where it says, and no source file grows past about 500 lines.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `` `path.rs: name` `` (or `Type::name`) the walk names.
fn hops(doc: &str) -> Vec<(String, String)> {
    let walk = doc.split("## One message").nth(1).expect("the walk section");
    let mut found = Vec::new();
    for quoted in walk.split('`').skip(1).step_by(2) {
        if let Some((file, function)) = quoted.split_once(".rs: ") {
            found.push((format!("{file}.rs"), function.trim().to_string()));
        }
    }
    found
}

#[test]
fn the_walk_of_one_message_names_real_functions() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md"))
        .expect("docs/architecture.md");
    let hops = hops(&doc);
    assert!(hops.len() >= 12, "{hops:?}");
    for (file, function) in hops {
        let text = std::fs::read_to_string(src().join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (owner, name) =
            function.rsplit_once("::").map_or((None, function.as_str()), |(o, n)| (Some(o), n));
        assert!(
            text.contains(&format!("fn {name}(")) || text.contains(&format!("fn {name}<")),
            "{file} has no fn {name}"
        );
        if let Some(owner) = owner {
            assert!(
                text.contains(&format!("impl {owner}")) || text.contains("impl<"),
                "{file}: no impl {owner}"
            );
        }
    }
}

#[test]
fn no_source_file_is_much_longer_than_500_lines() {
    let mut long = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path).expect("read").lines().count();
                if lines > 520 {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
}
