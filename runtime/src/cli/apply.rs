//! `tenet apply`: plan, show, confirm, converge. Given a saved plan (`plan --out`), apply
//! exactly that plan — but only if the manifest, the providers and every resource's
//! observed state are still what the plan was computed from.

use super::session::Session;
use super::{EXIT_ERROR, ManifestArgs, render};
use crate::engine::Event;
use crate::plan::{FORMAT_VERSION, Plan};
use anyhow::{Context, bail};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file or directory, or a plan saved with `tenet plan --out FILE`.
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// A saved plan is a JSON file with a `format_version`.
fn read_saved_plan(path: &Path) -> anyhow::Result<Option<Plan>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    let raw: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is neither a manifest nor a saved plan", path.display()))?;
    match raw
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => bail!(
            "{} is a plan in format {v}; this Tenet reads format {FORMAT_VERSION}: run `tenet plan` again",
            path.display()
        ),
        None => bail!("{} is JSON but not a saved Tenet plan", path.display()),
    }
    let plan = serde_json::from_value(raw)
        .with_context(|| format!("{} is not a valid saved plan", path.display()))?;
    Ok(Some(plan))
}

pub async fn execute(args: ApplyArgs) -> anyhow::Result<u8> {
    if let Some(saved) = read_saved_plan(&args.manifest.path)? {
        return apply_saved(&args, saved).await;
    }
    let session = Session::open(&args.manifest).await?;
    session.print_warnings();
    let engine = session.engine();
    let plan = engine
        .plan(&session.manifest, &session.graph, session.pins())
        .await;
    render::plan(&plan)?;
    if !plan.has_changes() {
        // Resources that could not be planned make the run fail; there is nothing to do.
        return Ok(if plan.has_errors() { EXIT_ERROR } else { 0 });
    }
    if !args.yes && !confirm()? {
        println!("Apply cancelled; nothing was changed.");
        return Ok(EXIT_ERROR);
    }
    run(&session, &plan).await
}

async fn apply_saved(args: &ApplyArgs, plan: Plan) -> anyhow::Result<u8> {
    let manifest_args = ManifestArgs {
        path: plan.manifest.path.clone().into(),
        ..args.manifest.clone()
    };
    let session = Session::open(&manifest_args).await?;
    if session.manifest.sha256 != plan.manifest.sha256 {
        bail!(
            "refusing to apply a stale plan: the manifest {} (or its variables) changed since the plan was made \
             (plan: sha256 {}, now: sha256 {}); run `tenet plan` again",
            plan.manifest.path,
            plan.manifest.sha256,
            session.manifest.sha256
        );
    }
    let pins = session.pins();
    for (name, pin) in &plan.providers {
        match pins.get(name) {
            Some(now) if now.component_sha256 == pin.component_sha256 => {}
            Some(now) => bail!(
                "refusing to apply a stale plan: provider `{name}` changed since the plan was made \
                 (expected sha256 {}, found {} from {})",
                pin.component_sha256,
                now.component_sha256,
                now.source
            ),
            None => {
                bail!("refusing to apply a stale plan: provider `{name}` is no longer declared")
            }
        }
    }
    let stale = session.engine().stale(&plan).await;
    if !stale.is_empty() {
        let list: Vec<String> = stale
            .iter()
            .map(|s| format!("  {}: {}", s.id, s.reason))
            .collect();
        bail!(
            "refusing to apply a stale plan: the system changed since the plan was made:\n{}\nrun `tenet plan` again",
            list.join("\n")
        );
    }
    render::plan(&plan)?;
    if !plan.has_changes() {
        return Ok(if plan.has_errors() { EXIT_ERROR } else { 0 });
    }
    run(&session, &plan).await
}

fn confirm() -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "apply needs confirmation and standard input is not a terminal: pass --yes to apply without asking"
        );
    }
    print!("\nDo you want to apply these changes? Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

async fn run(session: &Session, plan: &Plan) -> anyhow::Result<u8> {
    println!();
    let mut out = anstream::stdout();
    let mut on_event = |e: Event<'_>| {
        if let Event::Finished(r) = e
            && let Some(line) = render::result_line(r)
        {
            let _ = out.write_all(line.as_bytes());
        }
    };
    let report = session.engine().apply(plan, &mut on_event).await;
    let mut out = anstream::stdout();
    out.write_all(format!("\n{}", render::apply_summary(&report)).as_bytes())?;
    out.flush()?;
    Ok(if report.succeeded() { 0 } else { EXIT_ERROR })
}
