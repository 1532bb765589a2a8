//! Tidy checks: the rules of CONTRIBUTING.md that a machine can check. Dependency direction
//! between workspace crates, no OpenSSL, native-tls or ring anywhere in the built graph, a
//! `//!` module doc on every source file, no I/O crates or modules in the core, no
//! citation of a file outside the repository, `unsafe` only in the clock probe, no
//! security-sensitive crate (russh) below its floor in Cargo.lock, and a reason and a review
//! date for every advisory cargo audit ignores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

/// The workspace crates each crate may depend on (normal dependencies; dev-dependencies are
/// free). Front ends see core and net only (and api, the wire types they write); core and net
/// see nothing; api sees core only.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<_>>();
    BTreeMap::from([
        ("mailroom-core", set(&[])),
        ("mailroom-net", set(&[])),
        ("mailroom-tls", set(&["mailroom-ace"])),
        // Negotiated methods: pure data, so the agent can link it without the server.
        ("mailroom-ace", set(&[])),
        // The client agent speaks only the public API: it never links the server.
        ("mailroom-agent", set(&["mailroom-ace"])),
        ("mailroom-meta", set(&["mailroom-core"])),
        // The wire types shared by the API, the web UI and the CLI's --json.
        ("mailroom-api", set(&["mailroom-core"])),
        ("mailroom-blob", set(&["mailroom-core"])),
        (
            "mailroom-sftp",
            set(&["mailroom-core", "mailroom-ace", "mailroom-net"]),
        ),
        (
            "mailroom-ftps",
            set(&[
                "mailroom-core",
                "mailroom-ace",
                "mailroom-net",
                "mailroom-tls",
            ]),
        ),
        (
            "mailroom-https",
            set(&[
                "mailroom-core",
                "mailroom-ace",
                "mailroom-api",
                "mailroom-net",
                "mailroom-tls",
            ]),
        ),
        // The web UI extends the HTTPS front end: it reuses its state, logins and handlers.
        (
            "mailroom-web",
            set(&["mailroom-core", "mailroom-api", "mailroom-https"]),
        ),
        // Events that act: the job worker and its handlers (webhooks), onto the Hub.
        (
            "mailroom-events",
            set(&["mailroom-core", "mailroom-api", "mailroom-net"]),
        ),
        (
            "mailroom-test-support",
            set(&[
                "mailroom-core",
                "mailroom-ace",
                "mailroom-meta",
                "mailroom-blob",
                "mailroom-sftp",
                "mailroom-ftps",
                "mailroom-https",
                "mailroom-tls",
            ]),
        ),
        (
            "mailroom",
            set(&[
                "mailroom-core",
                "mailroom-ace",
                "mailroom-api",
                "mailroom-meta",
                "mailroom-blob",
                "mailroom-net",
                "mailroom-sftp",
                "mailroom-tls",
                "mailroom-ftps",
                "mailroom-https",
                "mailroom-web",
                "mailroom-events",
            ]),
        ),
        ("xtask", set(&[])),
    ])
}

#[test]
fn workspace_edges_follow_the_dependency_rules() {
    let meta = metadata();
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let allowed = allowed();
    for package in meta["packages"].as_array().unwrap() {
        if !package["source"].is_null() {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        let rule = allowed
            .get(name)
            .unwrap_or_else(|| panic!("new crate {name}: add its allowed edges to tidy.rs"));
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let normal = dep["kind"].is_null();
            if normal && members.contains(dep_name) {
                assert!(
                    rule.contains(dep_name),
                    "{name} must not depend on {dep_name} (CONTRIBUTING.md, Dependency direction)"
                );
            }
        }
    }
}

/// Domain types do not derive `Serialize`: the core has no serde at all, and what goes on the
/// wire is built by mailroom-api from the domain types.
#[test]
fn the_core_has_no_serde() {
    let meta = metadata();
    let core = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"].is_null() && p["name"] == "mailroom-core")
        .expect("mailroom-core in the workspace");
    for dep in core["dependencies"].as_array().unwrap() {
        let name = dep["name"].as_str().unwrap();
        assert!(
            !name.starts_with("serde"),
            "mailroom-core depends on {name}: wire shapes belong in mailroom-api"
        );
    }
}

#[test]
fn no_openssl_or_native_tls_in_the_graph() {
    // `cargo tree` resolves features, so it lists what is built. `cargo metadata` lists more:
    // a weak feature such as rustls-webpki's `ring?/alloc` puts `ring` in Cargo.lock and in
    // metadata's resolve although nothing turns it on and it is never compiled.
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--workspace",
            "--locked",
            "--edges",
            "normal,build,dev",
            "--target",
            "all",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).expect("cargo tree output");
    let names: BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.contains("rustls"), "the tree was read: {names:?}");
    for name in names {
        assert!(
            !matches!(name, "openssl-sys" | "openssl" | "native-tls" | "ring"),
            "{name} is in the dependency graph: one TLS stack, rustls on aws-lc-rs"
        );
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut stack = vec![root().join("crates"), root().join("xtask")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.starts_with("//!") {
                    missing.push(path);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

#[test]
fn core_does_no_io() {
    let forbidden = [
        "std::fs",
        "tokio::fs",
        "tokio::net",
        "std::net::TcpStream",
        "tokio::process",
        "std::process",
        "sqlx",
        "russh",
        "object_store",
        "axum",
    ];
    let mut folders = vec![root().join("crates/mailroom-core/src")];
    let mut files = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{} uses {word}: mailroom-core does no I/O",
                    path.display()
                );
            }
        }
    }
    assert!(
        files > 20,
        "only {files} files found under mailroom-core/src"
    );
}

/// The repository stands on its own: code and docs cite its own docs (docs/design.md,
/// CONTRIBUTING.md, ARCHITECTURE.md, docs/performance.md…), never the design notes the
/// project grew from, which live outside it. Every text file is read, wherever it is, except
/// build output, installed packages, the VCS folder and a local data folder. The names are
/// assembled at run time so that this file does not match itself.
#[test]
fn no_citation_of_files_outside_the_repository() {
    let needles = [
        format!("{}.md", "PRODUCT"),
        format!("{}.md", "STYLE"),
        format!("{}.md", "STACK"),
        format!("..{}shared", '/'),
        format!("seeds{}", '/'),
    ];
    let skipped = [
        "target",
        "node_modules",
        ".venv-test",
        ".git",
        "mailroom-data",
        "__pycache__",
    ];
    let base = root();
    let mut citations = Vec::new();
    let mut files = 0;
    let mut folders = vec![base.clone()];
    while let Some(folder) = folders.pop() {
        // Another process may remove a file or folder while we walk: what is gone is skipped.
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let name = entry.file_name();
                if !skipped.iter().any(|skip| name == *skip) {
                    folders.push(path);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            // Text files only: screenshots and other binary files are not UTF-8.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            files += 1;
            let shown = path.strip_prefix(&base).unwrap_or(&path).display();
            for (number, line) in text.lines().enumerate() {
                for needle in &needles {
                    if line.contains(needle.as_str()) {
                        citations.push(format!("{shown}:{}: {needle}", number + 1));
                    }
                }
            }
        }
    }
    assert!(
        files > 100,
        "only {files} text files found in the repository"
    );
    assert!(
        citations.is_empty(),
        "files outside the repository are cited; cite docs/design.md, CONTRIBUTING.md or \
         ARCHITECTURE.md instead, or say the idea in a few words:\n{}",
        citations.join("\n")
    );
}

/// `unsafe` is forbidden across the workspace (`[workspace.lints]`), with one exception: the
/// binary denies it instead, so that `crates/mailroom/src/clock.rs` alone may allow it for
/// its read-only `adjtimex(2)`. Every other crate takes the workspace's lints as they are, and
/// the binary's own tables say the same as the workspace's but for that one lint.
#[test]
fn unsafe_code_is_allowed_only_in_the_clock_probe() {
    let allowed_file = root().join("crates/mailroom/src/clock.rs");
    let mut allowing = Vec::new();
    let mut stack = vec![root().join("crates"), root().join("xtask")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains(&format!("allow({}_code)", "unsafe"))
            {
                allowing.push(path);
            }
        }
    }
    let expected: Vec<PathBuf> = vec![allowed_file];
    assert_eq!(
        allowing
            .iter()
            .map(|p| p.canonicalize().unwrap())
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|p| p.canonicalize().unwrap())
            .collect::<Vec<_>>(),
        "unsafe code is allowed only in clock.rs"
    );

    let manifest = |path: &Path| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let workspace = manifest(&root().join("Cargo.toml"));
    let workspace_lints = workspace["workspace"]["lints"].as_table().unwrap().clone();
    assert_eq!(
        workspace_lints["rust"]["unsafe_code"].as_str(),
        Some("forbid")
    );
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join("Cargo.toml"))
        .filter(|path| path.is_file())
        .collect();
    crates.push(root().join("xtask/Cargo.toml"));
    assert!(crates.len() > 10, "only {} crates found", crates.len());
    for path in crates {
        let lints = manifest(&path)["lints"].as_table().unwrap().clone();
        if path.ends_with("crates/mailroom/Cargo.toml") {
            let mut expected = workspace_lints.clone();
            expected["rust"]
                .as_table_mut()
                .unwrap()
                .insert("unsafe_code".to_owned(), "deny".into());
            assert_eq!(lints, expected, "{}", path.display());
        } else {
            assert_eq!(
                lints.get("workspace").and_then(toml::Value::as_bool),
                Some(true),
                "{} must take [workspace.lints]",
                path.display()
            );
        }
    }
}

/// The lowest versions of security-sensitive crates Cargo.lock may hold: each floor is the
/// first release with the fix of the advisory named beside it (the advisory database CI's
/// `cargo audit` reads, .ci/rustsec-advisory-db.tgz). Raise a floor when a new advisory lands;
/// never lower one.
const FLOORS: [(&str, &str, &str); 2] = [
    (
        "russh",
        "0.60.3",
        "RUSTSEC-2026-0154: unbounded agent frame allocation (CVE-2026-46673)",
    ),
    (
        "russh-cryptovec",
        "0.60.3",
        "RUSTSEC-2026-0153: unchecked CryptoVec allocation and growth",
    ),
];

#[test]
fn security_sensitive_crates_are_at_or_above_their_floor() {
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.lock")).unwrap()).unwrap();
    let packages = lock["package"].as_array().unwrap();
    for (name, floor, why) in FLOORS {
        let versions: Vec<&str> = packages
            .iter()
            .filter(|package| package["name"].as_str() == Some(name))
            .map(|package| package["version"].as_str().unwrap())
            .collect();
        assert!(!versions.is_empty(), "{name} is not in Cargo.lock");
        for version in versions {
            assert!(
                !below(version, floor),
                "Cargo.lock has {name} {version}, below its floor {floor} ({why}): cargo update -p {name}"
            );
        }
    }
}

/// Whether `version` comes before `floor` (x.y.z; a pre-release of a version comes before
/// it).
fn below(version: &str, floor: &str) -> bool {
    fn parts(version: &str) -> (Vec<u64>, bool) {
        // Build metadata (+…) does not order; a pre-release (-…) comes before its release.
        let version = version.split('+').next().unwrap_or(version);
        let (release, pre) = match version.split_once('-') {
            Some((release, _)) => (release, true),
            None => (version, false),
        };
        let numbers = release
            .split('.')
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| panic!("not a version: {version}"))
            })
            .collect();
        (numbers, pre)
    }
    let (version, version_pre) = parts(version);
    let (floor, _) = parts(floor);
    version < floor || (version == floor && version_pre)
}

#[test]
fn versions_compare_as_cargo_orders_them() {
    for (version, floor, expect) in [
        ("0.65.1", "0.60.3", false),
        ("0.60.3", "0.60.3", false),
        ("0.60.2", "0.60.3", true),
        ("0.9.9", "0.60.3", true),
        ("0.60.10", "0.60.3", false),
        ("1.0.0", "0.60.3", false),
        ("0.60.3-beta.1", "0.60.3", true),
        ("0.60.3+build.5", "0.60.3", false),
    ] {
        assert_eq!(below(version, floor), expect, "{version} below {floor}");
    }
}

/// Every advisory cargo audit is told to ignore (.cargo/audit.toml) has, in the comment just
/// above it, a `reason:` and a `review: YYYY-MM-DD`, so that no exception stays unexplained
/// or forgotten.
#[test]
fn every_audit_exception_has_a_reason_and_a_review_date() {
    let text = std::fs::read_to_string(root().join(".cargo/audit.toml")).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    let ignored: Vec<&str> = config["advisories"]["ignore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for id in &ignored {
        let at = lines
            .iter()
            .position(|line| line.starts_with(&format!("\"{id}\"")))
            .unwrap_or_else(|| panic!("{id} is not on a line of its own"));
        let comment: Vec<&str> = lines[..at]
            .iter()
            .rev()
            .take_while(|line| line.starts_with('#'))
            .copied()
            .collect();
        assert!(
            comment.iter().any(|line| line.starts_with("# reason: ")),
            "{id} has no `# reason:` line above it"
        );
        let review = comment
            .iter()
            .find_map(|line| line.strip_prefix("# review: "))
            .unwrap_or_else(|| panic!("{id} has no `# review: YYYY-MM-DD` line above it"));
        let date: Vec<&str> = review.get(..10).unwrap_or("").split('-').collect();
        assert!(
            date.len() == 3
                && [4, 2, 2]
                    .iter()
                    .zip(&date)
                    .all(|(len, part)| part.len() == *len && part.parse::<u32>().is_ok()),
            "{id}: review {review:?} does not start with a YYYY-MM-DD date"
        );
    }
}

/// The binary's library target (`crates/mailroom/src/lib.rs`, for the fuzz targets) declares
/// the same modules as `main.rs`: a module added to one alone breaks the fuzz build, which
/// only CI's fuzz step would otherwise notice.
#[test]
fn the_fuzzing_library_declares_every_module_of_the_binary() {
    let modules = |file: &str| -> BTreeSet<String> {
        let text = std::fs::read_to_string(root().join("crates/mailroom/src").join(file)).unwrap();
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("mod "))
            .filter_map(|rest| rest.strip_suffix(';'))
            .map(str::to_owned)
            .collect()
    };
    let (binary, library) = (modules("main.rs"), modules("lib.rs"));
    assert!(!binary.is_empty());
    assert_eq!(
        binary, library,
        "crates/mailroom/src/lib.rs must declare exactly main.rs's modules (behind the fuzzing feature)"
    );
}
