//! Human output: plans in Terraform's spirit (`+` create, `~` update, `-` delete, `-/+`
//! replace, field-level before → after, unified diffs for text) and apply progress.
//! Colour only when stdout is a terminal (and `NO_COLOR` is unset).

use crate::engine::{ApplyReport, Outcome, ResourceResult};
use crate::plan::{Plan, PlannedResource};
use crate::provider::{Action, FieldChange};
use anstyle::{AnsiColor, Style};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write as _;

/// Most lines of a unified diff (or multi-line value) shown per field; a plan must stay
/// readable when a file of a million lines changes.
pub const MAX_DIFF_LINES: usize = 200;
/// Largest pair of texts diffed line by line; past it the plan shows sizes only (diffing
/// is superlinear, and values come from providers).
pub const MAX_DIFF_INPUT_BYTES: usize = 1024 * 1024;
/// Longest single-line value shown in full.
pub const MAX_VALUE_CHARS: usize = 200;
/// Time budget for one text diff; past it `similar` falls back to a coarser diff.
const DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

fn color(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

fn symbol(action: Action) -> (&'static str, Style) {
    match action {
        Action::Create => ("+", color(AnsiColor::Green)),
        Action::Update => ("~", color(AnsiColor::Yellow)),
        Action::Replace => ("-/+", color(AnsiColor::Magenta)),
        Action::Delete => ("-", color(AnsiColor::Red)),
        Action::None => (" ", Style::new()),
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Delete => "will be deleted",
        Action::None => "is unchanged",
    }
}

/// What each provider of the plan may do, and what it asked for and was not granted.
pub fn sandbox_text(plan: &Plan) -> String {
    let mut out = String::new();
    let yellow = color(AnsiColor::Yellow);
    let red = color(AnsiColor::Red).bold();
    let _ = writeln!(out, "\nSandbox (what each provider may do):");
    for (name, pin) in &plan.providers {
        let granted = if pin.granted.is_empty() {
            "nothing (it can only compute and log)".to_owned()
        } else {
            pin.granted.join("; ")
        };
        let from = match &pin.provenance {
            Some(p @ crate::plan::Provenance::Unsigned { .. }) => {
                format!(" [{red}{p}{red:#}]")
            }
            Some(p) => format!(" [{p}]"),
            None => String::new(),
        };
        let _ = writeln!(out, "  {name}{from}: {granted}");
        for m in &pin.missing {
            let _ = writeln!(out, "    {yellow}not granted:{yellow:#} {m}");
        }
    }
    out
}

/// One loud line per provider that runs without a signature.
pub fn unsigned_text(plan: &Plan) -> String {
    let red = color(AnsiColor::Red).bold();
    let mut out = String::new();
    for (name, pin) in &plan.providers {
        if let Some(crate::plan::Provenance::Unsigned { reason }) = &pin.provenance {
            let _ = writeln!(
                out,
                "{red}WARNING: provider `{name}` is UNSIGNED ({reason}): no trusted key vouches for {} (sha256 {}).{red:#}",
                pin.source, pin.component_sha256
            );
        }
    }
    out
}

/// The plan as text.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = unsigned_text(plan);
    out.push_str(&plan_actions_text(plan));
    out.push_str(&sandbox_text(plan));
    out.push_str(&policy_text(&plan.policy));
    out
}

/// What the policies decided, one block per result:
///
/// ```text
/// Policy: 1 denied, 1 warning (policy set 3f9c1a2b, 5 rules in 3 files, 4 ms)
///   ✗ deny [soft-mandatory] tenet.network.deny NET-001
///       db-fw exposes database port 5432 to 0.0.0.0/0
///       at tenet.yaml:44:9 (resource db-fw, /source_cidrs/0); rule policy/network.rego:5:1
/// ```
pub fn policy_text(decisions: &[crate::policy::Decision]) -> String {
    use crate::policy::Outcome;
    let mut out = String::new();
    let Some(last) = decisions.last() else {
        return out;
    };
    let bold = Style::new().bold();
    let red = color(AnsiColor::Red);
    let yellow = color(AnsiColor::Yellow);
    let results: Vec<&crate::policy::PolicyResult> =
        decisions.iter().flat_map(|d| &d.results).collect();
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let elapsed: u64 = decisions.iter().map(|d| d.elapsed_ms).sum();
    let _ = writeln!(
        out,
        "\n{bold}Policy:{bold:#} {} denied, {} warning(s), {} waived, {} overridden, {} excepted (policy set {}, {} rules in {} files, {elapsed} ms)",
        count(Outcome::Denied),
        count(Outcome::Warning),
        count(Outcome::Waived),
        count(Outcome::Overridden),
        count(Outcome::Excepted),
        &last.set_sha256[..last.set_sha256.len().min(12)],
        last.rules,
        last.files.len(),
    );
    for r in results {
        let (mark, style, word) = match (r.outcome, r.blocks()) {
            (Outcome::Denied, true) => ("✗", red, "deny"),
            (Outcome::Denied, false) => ("!", yellow, "deny"),
            (Outcome::Warning, _) => ("!", yellow, "warn"),
            (Outcome::Excepted, _) => ("~", Style::new(), "excepted"),
            (Outcome::Waived, _) => ("~", Style::new(), "waived"),
            (Outcome::Overridden, _) => ("~", yellow, "overridden"),
        };
        let id = r.id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {style}{mark} {word}{style:#} [{}] {}{id} ({} stage)",
            r.level, r.rule, r.stage
        );
        let _ = writeln!(
            out,
            "      {}",
            crate::diag::terminal_text(&r.msg, "      ")
        );
        let subject = match (&r.resource, &r.provider, &r.path) {
            (Some(res), _, Some(p)) => format!(" (resource {res}, {p})"),
            (Some(res), _, None) => format!(" (resource {res})"),
            (None, Some(prov), Some(p)) => format!(" (provider {prov}, {p})"),
            (None, Some(prov), None) => format!(" (provider {prov})"),
            _ => String::new(),
        };
        let at = r
            .location
            .as_deref()
            .map(|l| format!("at {l}{subject}; "))
            .unwrap_or_default();
        let _ = writeln!(out, "      {at}rule {}", r.rule_location);
        if let Some(w) = &r.waiver {
            let _ = writeln!(
                out,
                "      waiver {} ({}): {} — approved by {}, expires {}",
                w.id, w.location, w.reason, w.approved_by, w.expires
            );
        }
        if let Some(o) = &r.overridden {
            let _ = writeln!(
                out,
                "      overridden by {}@{} at {}: {}",
                o.user, o.host, o.at, o.reason
            );
        }
    }
    // A waiver that covered nothing at any stage hides nothing and should go.
    let unused: Vec<&String> = last
        .waivers
        .unused
        .iter()
        .filter(|w| !decisions.iter().any(|d| d.waivers.used.contains(w)))
        .collect();
    for w in unused {
        let _ = writeln!(
            out,
            "  {yellow}!{yellow:#} waiver {w} covered nothing in this run: remove it if it is no longer needed"
        );
    }
    out
}

/// [`policy_text`] on stdout.
pub fn policy(decisions: &[crate::policy::Decision]) -> std::io::Result<()> {
    let mut stdout = anstream::stdout();
    stdout.write_all(policy_text(decisions).as_bytes())?;
    stdout.flush()
}

fn plan_actions_text(plan: &Plan) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let red = color(AnsiColor::Red);
    let changing: Vec<&PlannedResource> = plan
        .resources
        .iter()
        .filter(|r| {
            r.action != Action::None
                || r.error.is_some()
                || r.refresh
                || !r.orchestration.on_failure_of.is_empty()
                || r.orchestration.deferred.is_some()
        })
        .collect();
    let forget_lines = |out: &mut String| {
        for id in &plan.forget {
            let _ = writeln!(
                out,
                "  · {bold}{id}{bold:#} left the manifest with on_remove: forget: it will be dropped from the state, the system left as it is"
            );
        }
        for id in &plan.excluded {
            let _ = writeln!(
                out,
                "  · {bold}{id}{bold:#} is left out: its `when:` condition is false (not managed this run; the system keeps it as it is)"
            );
        }
    };
    if changing.is_empty() {
        forget_lines(&mut out);
        let _ = writeln!(
            out,
            "{bold}No changes.{bold:#} The system matches the manifest ({} resources).",
            plan.resources.len()
        );
        return out;
    }
    let _ = writeln!(out, "Tenet will perform the following actions:\n");
    forget_lines(&mut out);
    for r in changing {
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "  {red}!{red:#} {bold}{}{bold:#} ({}) cannot be planned:",
                r.id, r.type_name
            );
            let _ = writeln!(
                out,
                "      {}\n",
                crate::diag::terminal_text(e, crate::diag::CONTINUATION)
            );
            continue;
        }
        if !r.orchestration.on_failure_of.is_empty() {
            let watched: Vec<String> = r
                .orchestration
                .on_failure_of
                .iter()
                .map(|n| format!("`{n}`"))
                .collect();
            let _ = writeln!(
                out,
                "  ? {bold}{}{bold:#} ({}) runs only if {} fails\n",
                r.id,
                r.type_name,
                watched.join(" or ")
            );
            continue;
        }
        if let Some(why) = &r.orchestration.deferred {
            let yellow = color(AnsiColor::Yellow);
            let _ = writeln!(
                out,
                "  {yellow}…{yellow:#} {bold}{}{bold:#} ({}) will be {why}\n",
                r.id, r.type_name
            );
            continue;
        }
        if r.orchestration.check {
            let yellow = color(AnsiColor::Yellow);
            let seen = r
                .current
                .as_ref()
                .and_then(|c| c.get("seen"))
                .and_then(serde_json::Value::as_str)
                .map(|s| format!(": not healthy now ({})", crate::diag::one_line(s)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {yellow}…{yellow:#} {bold}{}{bold:#} ({}) will be waited for{seen}\n",
                r.id, r.type_name
            );
            continue;
        }
        if r.refresh {
            let yellow = color(AnsiColor::Yellow);
            let by: Vec<String> = r.notified_by.iter().map(|n| format!("`{n}`")).collect();
            let _ = writeln!(
                out,
                "  {yellow}~{yellow:#} {bold}{}{bold:#} ({}) will be refreshed: notified by {}\n",
                r.id,
                r.type_name,
                by.join(", ")
            );
            continue;
        }
        let (sym, style) = symbol(r.action);
        let _ = writeln!(
            out,
            "  {style}{sym}{style:#} {bold}{}{bold:#} ({}) {}{}",
            r.id,
            r.type_name,
            verb(r.action),
            if r.orphan {
                " (no longer in the manifest)"
            } else {
                ""
            }
        );
        let width = r.changes.iter().map(|c| field(c).len()).max().unwrap_or(0);
        for c in &r.changes {
            render_change(&mut out, c, r.action, width);
        }
        out.push('\n');
    }
    let s = plan.summary;
    let _ = write!(
        out,
        "{bold}Plan:{bold:#} {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
        s.create, s.update, s.replace, s.delete, s.unchanged
    );
    if s.refresh > 0 {
        let _ = write!(out, " {} to refresh.", s.refresh);
    }
    if s.wait > 0 {
        let _ = write!(out, " {} health check(s) to wait for.", s.wait);
    }
    if s.deferred > 0 {
        let _ = write!(out, " {} to plan once health checks pass.", s.deferred);
    }
    if s.conditional > 0 {
        let _ = write!(out, " {} to run only on failure.", s.conditional);
    }
    if s.errors > 0 {
        let _ = write!(out, " {red}{} could not be planned.{red:#}", s.errors);
    }
    out.push('\n');
    out
}

/// Print the plan to stdout.
pub fn plan(plan: &Plan) -> std::io::Result<()> {
    let mut stdout = anstream::stdout();
    stdout.write_all(plan_text(plan).as_bytes())?;
    stdout.flush()
}

/// `/mode` → `mode`; nested pointers stay pointers.
fn field(c: &FieldChange) -> String {
    // The provider names the field: its text, shown as its own.
    let p = c.path.strip_prefix('/').unwrap_or(&c.path);
    crate::diag::one_line(&if p.contains('/') {
        c.path.clone()
    } else {
        p.replace("~1", "/").replace("~0", "~")
    })
}

fn render_change(out: &mut String, c: &FieldChange, action: Action, width: usize) {
    let name = format!("{:width$}", field(c));
    let forces = if c.forces_replacement {
        let m = color(AnsiColor::Magenta);
        format!(" {m}# forces replacement{m:#}")
    } else {
        String::new()
    };
    let (sym, style) = match (&c.before, &c.after) {
        (None, Some(_)) => symbol(Action::Create),
        (Some(_), None) => symbol(Action::Delete),
        _ if action == Action::Create => symbol(Action::Create),
        _ => symbol(Action::Update),
    };
    let sym = if sym == "-/+" { "~" } else { sym };
    match (&c.before, &c.after) {
        (Some(Value::String(b)), Some(Value::String(a)))
            if action != Action::Create && (b.contains('\n') || a.contains('\n')) =>
        {
            let _ = writeln!(out, "      {style}{sym}{style:#} {name} ={forces}");
            unified_diff(out, b, a);
        }
        (Some(before), Some(after)) if action != Action::Create => {
            let _ = writeln!(
                out,
                "      {style}{sym}{style:#} {name} = {} -> {}{forces}",
                value(before, 10),
                value(after, 10)
            );
        }
        (_, Some(after)) => {
            let _ = writeln!(
                out,
                "      {style}{sym}{style:#} {name} = {}{forces}",
                value(after, 10)
            );
        }
        (Some(before), None) => {
            let _ = writeln!(
                out,
                "      {style}{sym}{style:#} {name} = {}{forces}",
                value(before, 10)
            );
        }
        (None, None) => {}
    }
}

/// A value for display: JSON, with multi-line strings as an indented block.
fn value(v: &Value, indent: usize) -> String {
    match v {
        Value::String(s) if s.contains('\n') => {
            let pad = " ".repeat(indent);
            let mut text = String::from("<<EOT\n");
            let lines: Vec<&str> = s.lines().collect();
            for line in lines.iter().take(MAX_DIFF_LINES) {
                let _ = writeln!(text, "{pad}  {}", crate::diag::one_line(line));
            }
            if lines.len() > MAX_DIFF_LINES {
                let _ = writeln!(
                    text,
                    "{pad}  … ({} more lines not shown)",
                    lines.len() - MAX_DIFF_LINES
                );
            }
            let _ = write!(text, "{pad}EOT");
            text
        }
        Value::Object(m) if m.contains_key("sha256") && m.contains_key("size") => format!(
            "(binary or large content: {} bytes, sha256 {})",
            crate::diag::one_line(&m["size"].to_string()),
            crate::diag::one_line(m["sha256"].as_str().unwrap_or_default())
        ),
        other => {
            // JSON escapes control characters, not bidi overrides or line separators.
            let text = crate::diag::one_line(&other.to_string());
            match text.char_indices().nth(MAX_VALUE_CHARS) {
                Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
                None => text,
            }
        }
    }
}

fn unified_diff(out: &mut String, before: &str, after: &str) {
    if before.len() + after.len() > MAX_DIFF_INPUT_BYTES {
        let _ = writeln!(
            out,
            "          (too large to show as a diff: {} bytes -> {} bytes)",
            before.len(),
            after.len()
        );
        return;
    }
    let diff = similar::TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(before, after);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header("current", "desired")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (green, red, cyan) = (
        color(AnsiColor::Green),
        color(AnsiColor::Red),
        color(AnsiColor::Cyan),
    );
    for line in lines.iter().take(MAX_DIFF_LINES) {
        let style = if line.starts_with("+++") || line.starts_with("---") {
            Style::new().bold()
        } else if line.starts_with('+') {
            green
        } else if line.starts_with('-') {
            red
        } else if line.starts_with("@@") {
            cyan
        } else {
            Style::new()
        };
        let line = crate::diag::one_line(line);
        let _ = writeln!(out, "          {style}{line}{style:#}");
    }
    if lines.len() > MAX_DIFF_LINES {
        let _ = writeln!(
            out,
            "          … ({} more diff lines not shown)",
            lines.len() - MAX_DIFF_LINES
        );
    }
}

/// One line per resource that changed, failed or was skipped.
pub fn result_line(r: &ResourceResult) -> Option<String> {
    let ms = r.duration.as_secs_f64() * 1000.0;
    let (sym, style, text) = match &r.outcome {
        Outcome::Unchanged | Outcome::NotTriggered { .. } => return None,
        Outcome::Checked => (
            "✓",
            color(AnsiColor::Green),
            format!("healthy after {ms:.1} ms"),
        ),
        Outcome::Created => (
            "+",
            color(AnsiColor::Green),
            format!("created in {ms:.1} ms"),
        ),
        Outcome::Updated => (
            "~",
            color(AnsiColor::Yellow),
            format!("updated in {ms:.1} ms"),
        ),
        Outcome::Refreshed => (
            "~",
            color(AnsiColor::Yellow),
            format!("refreshed (notified) in {ms:.1} ms"),
        ),
        Outcome::Replaced => (
            "-/+",
            color(AnsiColor::Magenta),
            format!("replaced in {ms:.1} ms"),
        ),
        Outcome::Deleted => ("-", color(AnsiColor::Red), format!("deleted in {ms:.1} ms")),
        Outcome::Failed { error } => (
            "!",
            color(AnsiColor::Red),
            format!(
                "failed: {}",
                crate::diag::terminal_text(error, crate::diag::CONTINUATION)
            ),
        ),
        Outcome::Skipped { upstream } => (
            "·",
            color(AnsiColor::Yellow),
            format!("skipped: it depends on `{upstream}`, which failed"),
        ),
        Outcome::NotStarted { reason } => (
            "·",
            color(AnsiColor::Yellow),
            format!("not started: {reason}"),
        ),
    };
    Some(format!(
        "  {style}{sym}{style:#} {} ({}) {text}\n",
        r.id, r.type_name
    ))
}

/// A failed attempt about to be tried again.
pub fn retry_line(id: &str, attempt: usize, error: &str, wait_ms: u64) -> String {
    let style = color(AnsiColor::Yellow);
    format!(
        "  {style}↻{style:#} {id} attempt {attempt} failed, trying again in {}: {}\n",
        humantime::format_duration(std::time::Duration::from_millis(wait_ms)),
        crate::diag::terminal_text(error, crate::diag::CONTINUATION)
    )
}

/// The slowest changes and the run's wall time, one line.
pub fn slowest(slowest: &[&ResourceResult], total: std::time::Duration) -> String {
    let mut text = if total.as_secs() >= 1 {
        format!("Took {:.2} s", total.as_secs_f64())
    } else {
        format!("Took {:.1} ms", total.as_secs_f64() * 1000.0)
    };
    if !slowest.is_empty() {
        let list: Vec<String> = slowest
            .iter()
            .map(|r| format!("{} {:.1} ms", r.id, r.duration.as_secs_f64() * 1000.0))
            .collect();
        let _ = write!(text, "; slowest: {}", list.join(", "));
    }
    text.push_str(".\n");
    text
}

/// The closing summary of an apply.
pub fn apply_summary(report: &ApplyReport) -> String {
    let c = report.counts();
    let bold = Style::new().bold();
    let head = if report.succeeded() {
        "Apply complete:"
    } else {
        "Apply finished with errors:"
    };
    format!(
        "{bold}{head}{bold:#} {} created, {} updated, {} replaced, {} deleted, {} unchanged, {} failed, {} skipped{}.\n",
        c.created,
        c.updated,
        c.replaced,
        c.deleted,
        c.unchanged,
        c.failed,
        c.skipped,
        if c.refreshed > 0 {
            format!(", {} refreshed", c.refreshed)
        } else {
            String::new()
        }
    ) + &if c.retried > 0 {
        format!(
            "Retried: {} resource{} needed {} attempts in all.\n",
            c.retried,
            if c.retried == 1 { "" } else { "s" },
            c.attempts
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ManifestRef, Summary};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn plan_with(changes: Vec<FieldChange>, action: Action) -> Plan {
        let resources = vec![PlannedResource {
            id: "f".into(),
            type_name: "file.file".into(),
            provider: "file".into(),
            kind: "file".into(),
            action,
            changes,
            desired: json!({}),
            current: None,
            current_sha256: None,
            depends_on: vec![],
            error: None,
            unknown: vec![],
            notified_by: vec![],
            refresh: false,
            orphan: false,
            sensitive: vec![],
            locks: Vec::new(),
            orchestration: Default::default(),
        }];
        Plan {
            format_version: 1,
            tenet_version: "test".into(),
            manifest: ManifestRef {
                path: "m".into(),
                sha256: "0".into(),
            },
            providers: BTreeMap::new(),
            summary: Summary::of(&resources),
            resources,
            forget: vec![],
            excluded: vec![],
            policy: vec![],
        }
    }

    #[test]
    fn long_text_diffs_are_truncated_past_the_limit() {
        let before: String = (0..1000).map(|i| format!("old {i}\n")).collect();
        let after: String = (0..1000).map(|i| format!("new {i}\n")).collect();
        let plan = plan_with(
            vec![FieldChange {
                path: "/content".into(),
                before: Some(json!(before)),
                after: Some(json!(after)),
                forces_replacement: false,
            }],
            Action::Update,
        );
        let text = anstream::adapter::strip_str(&plan_text(&plan)).to_string();
        assert!(
            text.contains("~ f (file.file) will be updated in place"),
            "{text}"
        );
        assert!(
            text.contains("-old 0") && !text.contains("+new 999"),
            "{text}"
        );
        assert!(text.contains("more diff lines not shown"), "{text}");
        assert!(
            text.lines().count() < MAX_DIFF_LINES + 20,
            "{} lines",
            text.lines().count()
        );
    }

    #[test]
    fn scalar_changes_show_before_and_after_and_replacement() {
        let plan = plan_with(
            vec![FieldChange {
                path: "/target".into(),
                before: Some(json!("a")),
                after: Some(json!("b")),
                forces_replacement: true,
            }],
            Action::Replace,
        );
        let text = anstream::adapter::strip_str(&plan_text(&plan)).to_string();
        assert!(
            text.contains("-/+ f (file.file) must be replaced"),
            "{text}"
        );
        assert!(
            text.contains("~ target = \"a\" -> \"b\" # forces replacement"),
            "{text}"
        );
        assert!(
            text.contains(
                "Plan: 0 to create, 0 to update, 1 to replace, 0 to delete, 0 unchanged."
            ),
            "{text}"
        );
    }
}
