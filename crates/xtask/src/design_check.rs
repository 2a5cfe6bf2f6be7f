//! DESIGN.md's tables of crates and modules against the workspace: every crate and module
//! named, nothing named that is not there.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Modules of a crate: its `src/*.rs` and `src/*/mod.rs`, `lib.rs` and `main.rs` aside.
    fn modules(src: &Path) -> BTreeSet<String> {
        std::fs::read_dir(src)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name()?.to_str()?.to_string();
                if p.is_dir() {
                    return p.join("mod.rs").exists().then_some(name);
                }
                let m = name.strip_suffix(".rs")?;
                (m != "lib" && m != "main").then(|| m.to_string())
            })
            .collect()
    }

    /// The backquoted names in the first cell of each row of the table after `marker`, and the
    /// row's plain first cell.
    fn table_rows<'a>(design: &'a str, marker: &str) -> Vec<Vec<&'a str>> {
        let at = design
            .find(marker)
            .unwrap_or_else(|| panic!("DESIGN.md lacks {marker:?}"));
        design[at..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| l.split('|').map(str::trim).skip(1).collect())
            .collect()
    }

    fn ticked(cell: &str) -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn design_md_names_every_crate_and_module_and_nothing_else() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let design = std::fs::read_to_string(root.join("docs/DESIGN.md")).unwrap();
        let crates: BTreeSet<String> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let block = &design[design.find("```\ncrates/").unwrap()..];
        let block = &block[..block[3..].find("```").unwrap()];
        let listed: BTreeSet<String> = block
            .lines()
            .filter_map(|l| l.strip_prefix("crates/"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        assert_eq!(listed, crates, "DESIGN.md's crate list");

        let core: BTreeSet<String> = table_rows(&design, "cfn-core holds the contract")
            .iter()
            .flat_map(|row| ticked(row[0]))
            .collect();
        assert_eq!(
            core,
            modules(&root.join("crates/cfn-core/src")),
            "cfn-core's table"
        );

        let rows = table_rows(&design, "The modules of the other crates");
        for krate in crates.iter().filter(|c| *c != "cfn-core") {
            let named: BTreeSet<String> = rows
                .iter()
                .filter(|r| r[0] == krate)
                .flat_map(|r| ticked(r[1]))
                .collect();
            let there = modules(&root.join("crates").join(krate).join("src"));
            assert_eq!(named, there, "DESIGN.md's modules of {krate}");
        }
        for r in &rows {
            assert!(
                crates.contains(r[0]),
                "DESIGN.md names a crate {:?} that is not there",
                r[0]
            );
        }
    }

    /// The layering DESIGN.md draws: a tool (a crate with a binary) never depends on another
    /// tool; they share code through the library crates.
    #[test]
    fn no_tool_crate_depends_on_another_tool_crate() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tools: BTreeSet<String> = std::fs::read_dir(&crates)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("src/main.rs").exists() && !p.ends_with("xtask"))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            tools.contains("cfn-serve") && tools.contains("cfn-agg"),
            "{tools:?}"
        );
        for tool in &tools {
            let manifest = std::fs::read_to_string(crates.join(tool).join("Cargo.toml")).unwrap();
            let deps = manifest
                .split("[dependencies]")
                .nth(1)
                .and_then(|d| d.split("\n[").next())
                .unwrap_or("");
            for line in deps.lines() {
                let name = line.split(['=', '.', ' ']).next().unwrap_or("");
                assert!(
                    !tools.contains(name) || name == tool,
                    "{tool} depends on the tool crate {name}"
                );
            }
        }
    }

    /// The modules a module's code (its tests aside) names as `crate::m` or `super::m`.
    fn module_uses(src: &Path, module: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
        let path = if src.join(module).join("mod.rs").exists() {
            src.join(module).join("mod.rs")
        } else {
            src.join(format!("{module}.rs"))
        };
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        all.iter()
            .filter(|m| *m != module)
            .filter(|m| {
                ["crate::", "super::"].iter().any(|p| {
                    code.match_indices(&format!("{p}{m}")).any(|(at, hit)| {
                        let next = code[at + hit.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                })
            })
            .cloned()
            .collect()
    }

    /// A module uses only modules below it: no crate has a cycle among its modules (the
    /// layers DESIGN.md draws for cfn-core).
    #[test]
    fn no_crate_has_a_cycle_among_its_modules() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for entry in std::fs::read_dir(&crates).unwrap() {
            let src = entry.unwrap().path().join("src");
            if !src.is_dir() {
                continue;
            }
            let all = modules(&src);
            let uses: std::collections::BTreeMap<String, BTreeSet<String>> = all
                .iter()
                .map(|m| (m.clone(), module_uses(&src, m, &all)))
                .collect();
            // Peel off modules that use nothing left; what remains holds a cycle.
            let mut left = all.clone();
            while let Some(m) = left
                .iter()
                .find(|m| uses[*m].iter().all(|u| !left.contains(u)))
                .cloned()
            {
                left.remove(&m);
            }
            assert!(left.is_empty(), "{}: a cycle among {left:?}", src.display());
        }
    }

    /// Functions of the product crates longer than 80 lines, as (crate/file, name, lines):
    /// from the `fn` line to its closing brace at the same indent, tests aside.
    fn long_functions() -> Vec<(String, String, usize)> {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = Vec::new();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&crates).unwrap() {
            let dir = entry.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            if name == "xtask" || name == "cfn-testkit" {
                continue;
            }
            let mut stack = vec![dir.join("src")];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        }
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let lines: Vec<&str> = code.lines().collect();
            let mut i = 0;
            while i < lines.len() {
                let line = lines[i];
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(crate) fn ",
                    "const fn ",
                    "pub const fn ",
                ]
                .iter()
                .any(|p| trimmed.starts_with(p));
                if !is_fn {
                    i += 1;
                    continue;
                }
                let name = trimmed
                    .split("fn ")
                    .nth(1)
                    .and_then(|r| r.split(['(', '<']).next())
                    .unwrap_or("")
                    .to_string();
                // The body ends at the first `}` line at the fn's own indent.
                let close = format!("{}}}", " ".repeat(indent));
                let Some(end) = (i + 1..lines.len()).find(|&k| {
                    lines[k].starts_with(&close)
                        && lines[k].len() - lines[k].trim_start().len() == indent
                }) else {
                    break;
                };
                let n = end - i + 1;
                if n > 80 {
                    let rel = path.strip_prefix(&crates).unwrap().display().to_string();
                    out.push((rel, name, n));
                }
                i = end + 1;
            }
        }
        out.sort();
        out
    }

    /// Every function of a product crate is under 80 lines, but for data tables.
    #[test]
    fn functions_are_under_eighty_lines() {
        const DATA_TABLES: &[&str] = &["default_rules"];
        let long: Vec<String> = long_functions()
            .into_iter()
            .filter(|(_, name, _)| !DATA_TABLES.contains(&name.as_str()))
            .map(|(file, name, n)| format!("{file}: {name} ({n} lines)"))
            .collect();
        assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
    }
}
