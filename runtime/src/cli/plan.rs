//! `tenet plan`: read every resource and show what apply would change. The providers
//! run with read-only access, so a plan never changes the system.

use super::{EXIT_CHANGES, EXIT_DENIED, EXIT_ERROR, ManifestArgs, RunArgs, render};
use crate::run::{self, AutoApprove, NoEvents, RunContext, Settings};
use crate::session::Session;
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
    /// Exit 0 when there is nothing to change, 2 when there are changes, 1 on error
    /// (and 3, whatever else, when a policy denies the plan).
    #[arg(long)]
    detailed_exitcode: bool,
    #[command(flatten)]
    overrides: super::args::PolicyOverrides,
}

pub async fn execute(args: PlanArgs) -> anyhow::Result<u8> {
    let options = crate::session::SessionOptions {
        policy_overrides: args.overrides.pairs()?,
        ..args.manifest.session_options()?
    };
    let session = Session::open(&options).await?;
    super::print_warnings(&session);
    let planned = run::plan(&mut RunContext {
        session: &session,
        state: options.state,
        settings: Settings {
            parallelism: args.run.parallelism,
            ..Settings::default()
        },
        approve: &mut AutoApprove,
        events: &mut NoEvents,
    })
    .await?;
    // Sensitive values never leave in clear: not on screen, not in plan files.
    let plan = planned.plan.redacted();
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
    } else if plan.denied() {
        EXIT_DENIED
    } else if args.detailed_exitcode && plan.has_changes() {
        EXIT_CHANGES
    } else {
        0
    })
}
