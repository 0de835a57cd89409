//! `tenet policy test`: OPA's test convention — every rule named `test_*` in any
//! package (usually in `*_test.rego` files beside the policies) is a test that passes
//! when it is defined and not `false`; `todo_*` rules are skipped. No test at all is a
//! failure (a typo in a filter must not pass silently).

use super::{PolicyConfig, engine_with, head_name, located, package_name, read_files};
use crate::diag::{Diagnostics, Location};
use std::time::{Duration, Instant};

/// One test's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    /// `data.package.test_name`.
    pub name: String,
    pub location: String,
    pub passed: bool,
    /// Why it failed: `false`/undefined, or the error it raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What its `print()` calls wrote.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prints: Vec<String>,
    pub elapsed_ms: f64,
}

/// Line coverage of one policy file over the whole test run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileCoverage {
    pub file: String,
    pub covered: usize,
    pub not_covered: Vec<u32>,
}

/// Every test of the policy set, with coverage when asked. `filter` keeps the tests
/// whose name contains it. The policy files' problems go to `diags` (and nothing runs).
pub fn run(
    config: &PolicyConfig,
    filter: Option<&str>,
    coverage: bool,
    diags: &mut Diagnostics,
) -> Option<(Vec<TestResult>, Vec<FileCoverage>)> {
    let before = diags.len();
    let (files, data) = read_files(config, true, diags);
    let mut engine = engine_with(&files, diags);
    if diags.len() == before {
        super::unknown_functions(&files, engine.get_modules(), diags);
    }
    if diags.len() > before {
        return None;
    }
    if let Err(e) = engine.add_data(regorus::Value::from(serde_json::Value::Object(data))) {
        diags.error(config.location.clone(), format!("policy data: {e}"));
        return None;
    }
    engine.set_gather_prints(true);
    engine.set_enable_coverage(coverage);
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: config.timeout,
        check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
    });
    let mut tests: Vec<(String, Location)> = Vec::new();
    for module in engine.get_modules().iter() {
        let package = package_name(module.package.refr.span().text());
        let file = module.package.span.source.get_path().clone();
        for rule in &module.policy {
            let span = match rule.as_ref() {
                regorus::unstable::Rule::Spec { head, .. } => match head {
                    regorus::unstable::RuleHead::Compr { refr, .. }
                    | regorus::unstable::RuleHead::Set { refr, .. }
                    | regorus::unstable::RuleHead::Func { refr, .. } => refr.span().clone(),
                },
                regorus::unstable::Rule::Default { refr, .. } => refr.span().clone(),
            };
            let name = head_name(span.text());
            let full = format!("data.{package}.{name}");
            if !name.starts_with("test_")
                || tests.iter().any(|(n, _)| *n == full)
                || filter.is_some_and(|f| !full.contains(f))
            {
                continue;
            }
            tests.push((
                full,
                Location::new(&file, span.line as usize, span.col as usize),
            ));
        }
    }
    let mut results = Vec::new();
    for (name, location) in tests {
        let started = Instant::now();
        let outcome = engine.eval_rule(name.clone());
        let elapsed = started.elapsed();
        let prints = engine.take_prints().unwrap_or_default();
        let (passed, error) = match outcome {
            Ok(regorus::Value::Undefined) => (
                false,
                Some("undefined: the test's body did not hold".to_owned()),
            ),
            Ok(regorus::Value::Bool(false)) => (false, Some("false".to_owned())),
            Ok(_) => (true, None),
            Err(e) => (false, Some(located(&e.to_string()).1)),
        };
        results.push(TestResult {
            name,
            location: location.to_string(),
            passed,
            error,
            prints,
            elapsed_ms: ms(elapsed),
        });
    }
    let mut cov = Vec::new();
    if coverage && let Ok(report) = engine.get_coverage_report() {
        for f in report.files {
            cov.push(FileCoverage {
                file: f.path,
                covered: f.covered.len(),
                not_covered: f.not_covered.into_iter().collect(),
            });
        }
    }
    Some((results, cov))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
