//! Invalid manifests under tests/fixtures/invalid/<case>/ with the exact error text
//! `tenet validate <case>` must print (expected.stderr; `$DIR` stands for the fixture
//! directory). Set TENET_BLESS=1 to rewrite the expectations after a deliberate change.

use crate::support::{stderr, tenet};
use std::path::PathBuf;

/// The fixture root `tests/fixtures/<kind>` and its case directories, sorted.
fn cases(kind: &str) -> (PathBuf, Vec<PathBuf>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(kind)
        .canonicalize()
        .expect("fixtures dir");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    (root, cases)
}

/// Compare `actual` with the expectation file `expected` (or rewrite it when
/// TENET_BLESS is set); the mismatch, if any, as a readable report.
fn check(name: &str, expected: &std::path::Path, actual: &str) -> Option<String> {
    if std::env::var_os("TENET_BLESS").is_some() {
        std::fs::write(expected, actual).expect("bless");
        return None;
    }
    let want = std::fs::read_to_string(expected)
        .unwrap_or_else(|_| panic!("{} missing (run with TENET_BLESS=1)", expected.display()));
    (want != actual).then(|| format!("--- {name}: expected\n{want}--- actual\n{actual}"))
}

fn name_of(case: &std::path::Path) -> String {
    case.file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn invalid_manifests_report_every_problem_with_its_place() {
    let (root, cases) = cases("invalid");
    assert!(cases.len() >= 4, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let name = name_of(&case);
        let o = tenet(&root, &["validate", &name]);
        assert_eq!(o.status.code(), Some(1), "{name} must fail validation");
        let actual = stderr(&o).replace(&case.display().to_string(), "$DIR");
        failures.extend(check(&name, &case.join("expected.stderr"), &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn graph_fixtures_print_the_expected_edges_and_order() {
    let (root, cases) = cases("graph");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let name = name_of(&case);
        let o = tenet(&root, &["graph", "--format", "json", &name]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let actual = String::from_utf8_lossy(&o.stdout).into_owned();
        failures.extend(check(&name, &case.join("expected.json"), &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
