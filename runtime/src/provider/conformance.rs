//! The provider contract as a test suite, for any provider in any language
//! (`tenet provider test`): given fixtures — desired property sets per kind — check that
//! the schema accepts them and rejects a violation, `validate` accepts them, a plan
//! changes nothing, `diff` against nothing plans a create, apply → read round-trips,
//! `diff` of equal desired and current is empty, a second apply changes nothing, an
//! update converges, batched reads (`read_many`, for kinds the provider batches) agree
//! with single reads, and `delete` then `read` finds nothing. Calls run in the sandbox
//! with the provider's limits; a trap or a timeout fails the check it happened in.

use super::{Action, CallContext, KindInfo, Provider, ProviderError};
use serde_json::Value;
use std::time::{Duration, Instant};

/// One fixture: desired properties, and optionally a second desired state to update to.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub properties: Value,
    pub update: Option<Value>,
    /// The kind's `delete` leaves the system as it is (a command cannot be undone): the
    /// check is then that `delete` succeeds and `read` still finds the resource.
    pub delete_keeps: bool,
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub kind: String,
    pub case: String,
    pub name: &'static str,
    pub outcome: Result<(), String>,
    /// Time spent in provider calls for this check.
    pub elapsed: Duration,
}

/// A fingerprint of everything the provider may touch (the scratch directory): equal
/// fingerprints mean nothing changed.
pub type Fingerprint<'a> = &'a (dyn Fn() -> String + Send + Sync);

struct Run<'a> {
    p: &'a dyn Provider,
    kind: &'a KindInfo,
    case: &'a Case,
    out: Vec<Check>,
    spent: Duration,
    /// Calls stopped by a limit (a trap: memory, stack; or the deadline).
    over_limits: Vec<String>,
}

impl Run<'_> {
    fn record(&mut self, name: &'static str, outcome: Result<(), String>) -> bool {
        let ok = outcome.is_ok();
        self.out.push(Check {
            kind: self.kind.name.clone(),
            case: self.case.name.clone(),
            name,
            outcome,
            elapsed: std::mem::take(&mut self.spent),
        });
        ok
    }

    async fn timed<T>(
        &mut self,
        f: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let r = f.await;
        self.spent += started.elapsed();
        r.map_err(|e| {
            if matches!(e.kind, super::ErrorKind::Trap | super::ErrorKind::Timeout) {
                self.over_limits
                    .push(format!("{}: {}", e.operation, e.kind));
            }
            e.to_string()
        })
    }

    /// Whether the provider reads this kind in batches (`read_many` is then its own
    /// export, which must agree with `read`).
    fn batched(&self) -> bool {
        self.p.execution().batched_kinds.contains(&self.kind.name)
    }

    /// A batched read of `props` twice over (a batch of one would not show a provider
    /// that answers for the wrong resource); both answers, or the first error.
    async fn read_many(&mut self, props: &Value) -> Result<Vec<Option<Value>>, String> {
        let (p, kind) = (self.p, self.kind.name.clone());
        let resource = self.case.name.clone();
        let started = Instant::now();
        let results = p
            .read_many(
                &[&resource, &resource],
                &kind,
                &[props.clone(), props.clone()],
            )
            .await;
        self.spent += started.elapsed();
        results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    async fn read(&mut self, props: &Value) -> Result<Option<Value>, String> {
        let (p, kind) = (self.p, self.kind.name.clone());
        let resource = self.case.name.clone();
        self.timed(p.read(
            CallContext {
                resource: &resource,
            },
            &kind,
            props,
        ))
        .await
    }
}

/// A document the schema must reject: the fixture without its first required property,
/// or with an unknown property when the schema closes the object.
fn violation(schema: &Value, props: &Value) -> Option<(Value, String)> {
    let mut doc = props.clone();
    if let Some(first) = schema["required"].as_array().and_then(|r| r.first()) {
        let key = first.as_str()?.to_owned();
        doc.as_object_mut()?.remove(&key);
        return Some((doc, format!("without required `{key}`")));
    }
    if schema["additionalProperties"] == Value::Bool(false) {
        doc.as_object_mut()?
            .insert("tenet-conformance-unknown".into(), Value::from(1));
        return Some((doc, "with an unknown property".into()));
    }
    None
}

fn expect(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(message()) }
}

/// Run the contract for one fixture of `kind`; `fingerprint` observes the system.
pub async fn check_case(
    p: &dyn Provider,
    kind: &KindInfo,
    case: &Case,
    fingerprint: Fingerprint<'_>,
) -> Vec<Check> {
    let mut run = Run {
        p,
        kind,
        case,
        out: Vec::new(),
        spent: Duration::ZERO,
        over_limits: Vec::new(),
    };
    let out = contract(&mut run, fingerprint).await;
    let within = expect(run.over_limits.is_empty(), || {
        format!("stopped by a limit: {}", run.over_limits.join("; "))
    });
    let mut out = out;
    out.push(Check {
        kind: kind.name.clone(),
        case: case.name.clone(),
        name: "calls stay within limits",
        outcome: within,
        elapsed: Duration::ZERO,
    });
    out
}

async fn contract(run: &mut Run<'_>, fingerprint: Fingerprint<'_>) -> Vec<Check> {
    let (p, kind, case) = (run.p, run.kind, run.case);
    let k = kind.name.clone();
    let desired = &case.properties;

    // The schema: accepts the fixture, rejects a violation.
    let validator = match super::compile_schema(&kind.schema) {
        Ok(v) => v,
        Err(e) => {
            run.record("schema compiles", Err(e));
            return std::mem::take(&mut run.out);
        }
    };
    let accepted = validator
        .validate(desired)
        .map_err(|e| format!("the fixture does not match the kind's schema: {e}"));
    if !run.record("schema accepts the fixture", accepted) {
        return std::mem::take(&mut run.out);
    }
    let rejects = match violation(&kind.schema, desired) {
        Some((doc, how)) => expect(!validator.is_valid(&doc), || {
            format!("the schema accepts the fixture {how}")
        }),
        None => Err("the schema accepts anything: declare `required` properties or `additionalProperties: false`".into()),
    };
    run.record("schema rejects a violation", rejects);

    let cx_name = case.name.clone();
    let cx = CallContext { resource: &cx_name };
    let diags = run.timed(p.validate(cx, &k, desired)).await;
    run.record(
        "validate accepts the fixture",
        diags.and_then(|d| {
            let errors: Vec<String> = d
                .iter()
                .filter(|d| d.is_error)
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
            expect(errors.is_empty(), || errors.join("; "))
        }),
    );

    // A plan: read and diff change nothing; nothing there yet; diff plans a create.
    let before = fingerprint();
    let absent = run.read(desired).await;
    let found_nothing = absent.and_then(|s| {
        expect(s.is_none(), || {
            format!("read found {} before apply: the fixture must name something that does not exist yet", s.unwrap_or_default())
        })
    });
    if !run.record("read before apply finds nothing", found_nothing) {
        return std::mem::take(&mut run.out);
    }
    let batched_absent = if run.batched() {
        Some(run.read_many(desired).await)
    } else {
        None
    };
    let plan = run.timed(p.diff(cx, &k, desired, None)).await;
    run.record(
        "diff against nothing plans a create",
        plan.and_then(|d| {
            expect(d.action == Action::Create, || {
                format!("action is {}", d.action)
            })
        }),
    );
    let after = fingerprint();
    run.record(
        "plan changes nothing",
        expect(before == after, || "read/diff changed the system".into()),
    );

    // Apply, then read: the same state.
    let applied = run.timed(p.apply(cx, &k, desired, None)).await;
    let state = match applied {
        Ok(s) => s,
        Err(e) => {
            run.record("apply → read round-trips", Err(e));
            return std::mem::take(&mut run.out);
        }
    };
    let reread = run.read(desired).await;
    let current = match reread {
        Ok(Some(c)) => c,
        Ok(None) => {
            run.record(
                "apply → read round-trips",
                Err("read finds nothing after apply".into()),
            );
            return std::mem::take(&mut run.out);
        }
        Err(e) => {
            run.record("apply → read round-trips", Err(e));
            return std::mem::take(&mut run.out);
        }
    };
    run.record(
        "apply → read round-trips",
        expect(current == state, || {
            format!("apply returned {state}, read returns {current}")
        }),
    );
    if let Some(absent) = batched_absent {
        let present = run.read_many(desired).await;
        let agree = absent.and_then(|before| {
            expect(before.iter().all(Option::is_none), || {
                format!("before apply, read found nothing but read-many found {before:?}")
            })?;
            let after = present?;
            expect(after.iter().all(|s| s.as_ref() == Some(&current)), || {
                format!("after apply, read returns {current} but read-many returns {after:?}")
            })
        });
        run.record("batched and single reads agree", agree);
    }

    // Converged: no changes planned, and applying again changes nothing.
    let again = run.timed(p.diff(cx, &k, desired, Some(&current))).await;
    run.record(
        "diff of equal desired and current is empty",
        again.and_then(|d| {
            expect(d.action == Action::None && d.changes.is_empty(), || {
                format!("action {} with {} changes", d.action, d.changes.len())
            })
        }),
    );
    let before = fingerprint();
    let second = run.timed(p.apply(cx, &k, desired, Some(&current))).await;
    let after = fingerprint();
    run.record(
        "a second apply changes nothing",
        second.and_then(|_| expect(before == after, || "the system changed".into())),
    );

    // Update, if the fixture has one.
    let mut current = current;
    let mut last = desired.clone();
    if let Some(update) = &case.update {
        let result: Result<Value, String> = async {
            validator
                .validate(update)
                .map_err(|e| format!("the update does not match the schema: {e}"))?;
            let d = run.timed(p.diff(cx, &k, update, Some(&current))).await?;
            expect(
                matches!(d.action, Action::Update | Action::Replace) && !d.changes.is_empty(),
                || format!("diff plans {} with {} changes", d.action, d.changes.len()),
            )?;
            let target = if d.action == Action::Replace {
                run.timed(p.delete(cx, &k, &current)).await?;
                None
            } else {
                Some(&current)
            };
            let s = run.timed(p.apply(cx, &k, update, target)).await?;
            let r = run.read(update).await?;
            expect(r.as_ref() == Some(&s), || {
                format!(
                    "apply returned {s}, read returns {}",
                    r.clone().unwrap_or_default()
                )
            })?;
            let d = run.timed(p.diff(cx, &k, update, Some(&s))).await?;
            expect(d.action == Action::None, || {
                format!("after the update diff plans {}", d.action)
            })?;
            Ok(s)
        }
        .await;
        match result {
            Ok(s) => {
                run.record("an update converges", Ok(()));
                current = s;
                last = update.clone();
            }
            Err(e) => {
                run.record("an update converges", Err(e));
            }
        }
    }

    // Delete, then nothing is there (or, for kinds whose delete keeps, still there).
    let deleted = run.timed(p.delete(cx, &k, &current)).await;
    let keeps = case.delete_keeps;
    let after = match deleted {
        Ok(()) => run.read(&last).await.and_then(|s| match (keeps, s) {
            (false, None) | (true, Some(_)) => Ok(()),
            (false, Some(s)) => Err(format!("read still finds {s}")),
            (true, None) => {
                Err("the fixture says delete keeps the resource, but read finds nothing".into())
            }
        }),
        Err(e) => Err(e),
    };
    run.record(
        if keeps {
            "delete succeeds and keeps (as declared)"
        } else {
            "delete then read finds nothing"
        },
        after,
    );
    std::mem::take(&mut run.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::mock::MockProvider;
    use serde_json::json;

    fn case() -> Case {
        Case {
            name: "one".into(),
            properties: json!({"name": "a", "value": "1"}),
            update: Some(json!({"name": "a", "value": "2"})),
            delete_keeps: false,
        }
    }

    #[tokio::test]
    async fn a_correct_provider_passes_every_check() {
        let p = MockProvider::new();
        let kind = p.info().kinds["item"].clone();
        let checks = check_case(&p, &kind, &case(), &|| String::new()).await;
        let failed: Vec<_> = checks.iter().filter(|c| c.outcome.is_err()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert_eq!(checks.len(), 12, "{checks:#?}");
    }

    #[tokio::test]
    async fn a_plan_that_changes_the_system_fails() {
        let p = MockProvider::new();
        let kind = p.info().kinds["item"].clone();
        let ticks = std::sync::atomic::AtomicUsize::new(0);
        // Every observation differs: as if each call changed something.
        let moving = move || {
            ticks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_string()
        };
        let checks = check_case(&p, &kind, &case(), &moving).await;
        let by_name = |n: &str| {
            checks
                .iter()
                .find(|c| c.name == n)
                .expect(n)
                .outcome
                .clone()
        };
        assert!(by_name("plan changes nothing").is_err());
        assert!(by_name("a second apply changes nothing").is_err());
    }

    #[tokio::test]
    async fn a_fixture_the_schema_rejects_stops_the_case() {
        let p = MockProvider::new();
        let kind = p.info().kinds["item"].clone();
        let bad = Case {
            name: "bad".into(),
            properties: json!({"value": 3}),
            update: None,
            delete_keeps: false,
        };
        let checks = check_case(&p, &kind, &bad, &|| String::new()).await;
        assert_eq!(
            checks.len(),
            2,
            "the failed check and the limits check: {checks:#?}"
        );
        assert!(
            checks[0]
                .outcome
                .as_ref()
                .is_err_and(|e| e.contains("does not match"))
        );
    }
}
