//! The command line. Each subcommand is its own module with an `execute` function;
//! [`main`] parses arguments, sets up logging, runs the command on a tokio runtime and
//! maps the result to a documented exit code, printing errors with their cause chain.

mod agent;
mod apply;
pub mod args;
mod config;
mod data;
mod drift;
mod facts;
mod fleet;
mod graph;
mod history;
mod plan;
mod plugin;
mod policy;
mod progress;
mod provider;
mod providers;
mod render;
mod rollout;
mod validate;

pub use args::{ManifestArgs, RunArgs};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: something failed (invalid manifest, provider error, failed resource).
pub const EXIT_ERROR: u8 = 1;
/// How long the exit waits for work still on the runtime's blocking pool.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Exit code of `plan --detailed-exitcode` when there are changes.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code when a policy denies the plan or the manifest (`plan`, `apply`,
/// `validate`, `policy check`): nothing was changed. Wins over [`EXIT_CHANGES`].
pub const EXIT_DENIED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "tenet",
    version,
    about = "Desired-state configuration with sandboxed WebAssembly providers",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). `TENET_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifest and report every problem at once, without reading the system.
    Validate(validate::ValidateArgs),
    /// Show what apply would change. Never changes the system.
    Plan(plan::PlanArgs),
    /// Converge the system to the manifest (or apply a saved plan).
    Apply(apply::ApplyArgs),
    /// List the manifest's providers: kinds, grants and limits.
    Providers(providers::ProvidersArgs),
    /// Print the dependency graph (Graphviz DOT or JSON).
    Graph(graph::GraphArgs),
    /// Plan and apply the desired state recorded by an earlier run.
    Rollback(apply::RollbackArgs),
    /// Report resources whose system state moved away from what was last applied.
    Drift(drift::DriftArgs),
    /// Print the facts manifests see on this host (`${ facts.os.family }`, …).
    Facts(facts::FactsArgs),
    /// Layered data: `explain KEY` shows each layer it is looked up in, and which won.
    Data(data::DataArgs),
    /// Inspect or edit the state: list, show, forget, unlock.
    State(history::StateArgs),
    /// List recorded runs, newest first.
    History(history::HistoryArgs),
    /// Show one recorded run.
    Show(history::ShowArgs),
    /// Check the history's hash chain.
    Audit(history::AuditArgs),
    /// Install what the manifest's providers need and pin them in tenet.lock.
    Init(plugin::InitArgs),
    /// Pin every provider of the manifest by digest in tenet.lock (--upgrade NAME moves
    /// a pin and shows the capability changes).
    Lock(plugin::LockArgs),
    /// The compile cache: `gc`.
    Cache(plugin::CacheArgs),
    /// Signing keys for plugin bundles.
    Key(plugin::KeyArgs),
    /// Write providers: build one from source (Rust, Python or JavaScript), and test one
    /// against the provider contract.
    Provider(provider::ProviderArgs),
    /// Plugin bundles: pack, sign, verify, inspect, install, list, remove, push, pull.
    Plugin(plugin::PluginArgs),
    /// Compliance metrics from the history: compliance rate, drift frequency, MTTR,
    /// change failure rate, provisioning time.
    Report(history::ReportArgs),
    /// Policies: `check` (preflight, no provider loaded), `input` (what they read).
    Policy(policy::PolicyArgs),
    /// Keep the system converged: on a schedule, on file events, on a changed manifest.
    Agent(agent::AgentArgs),
    /// Desired state as signed OCI artifacts: `push` a manifest directory, `pull`,
    /// `verify`, `tag` (point a channel at a digest).
    Config(config::ConfigArgs),
    /// The fleet database: `serve` (the ingest agents report to), `enroll`, `status`,
    /// `nodes`, `drift`, `failures`, `runs`, `maintain`.
    Fleet(fleet::FleetArgs),
    /// Staged roll-outs of an artifact to a channel: `start`, `resume`, `status`.
    Rollout(rollout::RolloutArgs),
}

/// The session's warnings, on stderr, in file order.
fn print_warnings(session: &crate::session::Session) {
    if !session.warnings.is_empty() {
        eprint!("{}", session.warnings.clone().sorted());
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate(a) => validate::execute(a).await,
            Command::Plan(a) => plan::execute(a).await,
            Command::Apply(a) => apply::execute(a).await,
            Command::Providers(a) => providers::execute(a).await,
            Command::Graph(a) => graph::execute(a).await,
            Command::Drift(a) => drift::execute(a).await,
            Command::Facts(a) => facts::execute(a),
            Command::Data(a) => data::execute(a),
            Command::Rollback(a) => apply::rollback(a).await,
            Command::State(a) => history::state(a),
            Command::History(a) => history::history(a),
            Command::Show(a) => history::show(a),
            Command::Audit(a) => history::audit(a),
            Command::Report(a) => history::report(a),
            Command::Key(a) => plugin::key(a),
            Command::Lock(a) => plugin::lock(a).await,
            Command::Init(a) => plugin::init(a).await,
            Command::Cache(a) => plugin::cache(a),
            Command::Provider(a) => provider::execute(a).await,
            Command::Plugin(a) => plugin::plugin(a).await,
            Command::Policy(a) => policy::execute(a).await,
            Command::Agent(a) => agent::execute(a).await,
            Command::Config(a) => config::execute(a).await,
            Command::Fleet(a) => fleet::execute(a).await,
            Command::Rollout(a) => rollout::execute(a).await,
        }
    });
    // Abandoned provider calls stop themselves; whatever is still on the blocking pool
    // (a thread stuck in a system call) does not hold the exit up.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if let Some(crate::session::SessionError::Denied(decision)) =
                e.downcast_ref::<crate::session::SessionError>()
            {
                let _ = render::policy(std::slice::from_ref(decision.as_ref()));
                println!("Refused by policy before any provider was loaded: nothing was changed.");
                return ExitCode::from(EXIT_DENIED);
            }
            let invalid = e
                .downcast_ref::<crate::diag::ValidationFailed>()
                .or_else(|| match e.downcast_ref::<crate::session::SessionError>() {
                    Some(crate::session::SessionError::Invalid(v)) => Some(v),
                    _ => None,
                });
            if let Some(v) = invalid {
                eprint!("{v}");
                eprintln!();
            } else {
                // Errors quote providers and programs: their text stays visibly theirs.
                eprintln!(
                    "error: {}",
                    crate::diag::terminal_text(&format!("{e:#}"), crate::diag::CONTINUATION)
                );
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(broken)
            // The prompt's and the display's own errors, carried through the run.
            || match c.downcast_ref::<crate::run::RunError>() {
                Some(crate::run::RunError::Approve(inner) | crate::run::RunError::Events(inner)) => {
                    inner.downcast_ref::<std::io::Error>().is_some_and(broken)
                }
                _ => false,
            }
    })
}
