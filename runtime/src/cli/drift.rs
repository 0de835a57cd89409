//! `tenet drift`: has the system moved away from what Tenet last applied? The check is
//! [`crate::run::drift`]; this prints what it found (text or `--json`) and maps it to an
//! exit code.

use super::{EXIT_CHANGES, EXIT_ERROR, ManifestArgs, RunArgs};
use crate::run::{self, AutoApprove, Drift, NoEvents, RunContext, Settings};
use crate::session::Session;
use clap::Args;
use serde_json::{Value, json};
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 0 when nothing drifted, 2 when something did, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// How long to wait for a run that holds the state's lock (e.g. `30s`): the system is
    /// read only while no apply is changing it, so a half-applied change is not drift.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = super::args::parse_timeout)]
    lock_timeout: std::time::Duration,
}

pub async fn execute(args: DriftArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let session = Session::open(&options).await?;
    super::print_warnings(&session);
    let found = run::drift(&mut RunContext {
        session: &session,
        state: options.state,
        settings: Settings {
            parallelism: args.run.parallelism,
            lock_timeout: args.lock_timeout,
            ..Settings::default()
        },
        approve: &mut AutoApprove,
        events: &mut NoEvents,
    })
    .await?;
    let (checked, drifted, errors, run) = match found {
        Drift::NoState { path } => {
            println!(
                "No state at {}: nothing has been applied here yet, so nothing can have drifted.",
                path.display()
            );
            return Ok(0);
        }
        Drift::Checked {
            resources,
            drifted,
            errors,
            run,
        } => (resources, drifted, errors, run),
    };

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "run": run,
                "checked": checked.len(),
                "drifted": drifted,
                "errors": errors,
                "resources": checked,
            }))?
        );
    } else {
        let mut out = String::new();
        for c in &checked {
            match c.status {
                "drifted" => {
                    writeln!(out, "  ~ {} ({}) drifted:", c.id, c.type_name)?;
                    for f in &c.fields {
                        let show = |v: &Option<Value>| {
                            v.as_ref().map_or("(absent)".to_owned(), |v| {
                                crate::diag::one_line(&v.to_string())
                            })
                        };
                        writeln!(
                            out,
                            "      {}: expected {}, found {}",
                            crate::diag::one_line(f.path.trim_start_matches('/')),
                            show(&f.expected),
                            show(&f.actual)
                        )?;
                    }
                }
                "missing" => writeln!(
                    out,
                    "  - {} ({}) is gone from the system",
                    c.id, c.type_name
                )?,
                "error" => writeln!(
                    out,
                    "  ! {} ({}) could not be checked: {}",
                    c.id,
                    c.type_name,
                    crate::diag::terminal_text(
                        c.error.as_deref().unwrap_or(""),
                        crate::diag::CONTINUATION
                    )
                )?,
                _ => {}
            }
        }
        writeln!(
            out,
            "{}Drift check: {} resources, {drifted} drifted, {errors} could not be checked (recorded as run #{run}).",
            if out.is_empty() { "" } else { "\n" },
            checked.len()
        )?;
        print!("{out}");
    }
    Ok(if errors > 0 {
        EXIT_ERROR
    } else if args.detailed_exitcode && drifted > 0 {
        EXIT_CHANGES
    } else {
        0
    })
}
