//! `tenet plan`: read every resource and show what apply would change. The providers
//! run with read-only access, so a plan never changes the system.

use super::session::Session;
use super::{EXIT_CHANGES, EXIT_ERROR, ManifestArgs, RunArgs, render};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Print the plan as JSON (the format `--out` writes; see README).
    #[arg(long)]
    json: bool,
    /// Save the plan to FILE for a later `tenet apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 0 when there is nothing to change, 2 when there are changes, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
}

pub async fn execute(args: PlanArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.manifest).await?;
    session.print_warnings();
    let started_at = crate::state::now();
    // The state, if there is one (a plan never creates it): for deletions, and to
    // record the plan in the history.
    let store = if args
        .manifest
        .location
        .path_for(&session.manifest.path)
        .exists()
    {
        Some(super::history::open_for(
            &args.manifest.location,
            &session.manifest,
        )?)
    } else {
        None
    };
    let plan = session
        .plan(
            store.as_deref(),
            &session.run_options(args.run.parallelism, false),
        )
        .await?;
    if let Some(store) = &store {
        super::history::remember_plan(store.as_ref(), &session.manifest, &plan, &started_at)?;
    }
    // Sensitive values never leave in clear: not on screen, not in plan files.
    let plan = plan.redacted();
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&plan)?;
        crate::atomic::write(out, text.as_bytes())
            .with_context(|| format!("cannot write plan to {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        render::plan(&plan)?;
        if let Some(out) = &args.out {
            println!(
                "\nSaved the plan to {}; apply it with `tenet apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if plan.has_errors() {
        EXIT_ERROR
    } else if args.detailed_exitcode && plan.has_changes() {
        EXIT_CHANGES
    } else {
        0
    })
}
