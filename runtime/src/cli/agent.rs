//! `tenet agent [PATH]`: keep the system converged — on a schedule, on file events on
//! managed paths, on a changed manifest, on SIGHUP/SIGUSR1 or `POST /run` (see
//! [`crate::agent`]). Signals become the agent's controls: SIGTERM/SIGINT stop it (the
//! run in flight finishes within `--shutdown-grace`; a second signal cancels it),
//! SIGHUP reloads the manifest, SIGUSR1 runs now.
//!
//! With `--source oci://…:channel`: the manifest comes from a signed desired-state
//! artifact (see [`crate::agent::source`]); PATH is then the agent's own directory,
//! holding its state (`.tenet/state.db`) and the artifacts it pulled (`.tenet/source/`).
//!
//! With `--once`: one run, and the exit code of its outcome (0 converged or changed,
//! 2 drifted in detect mode, 3 refused by policy, 1 failed).

use super::args::parse_timeout;
use super::{EXIT_CHANGES, EXIT_DENIED, EXIT_ERROR, ManifestArgs, RunArgs};
use crate::agent::{self, AgentOptions, Control, Mode, Outcome};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Apply corrections.
    Enforce,
    /// Report drift, change nothing.
    Detect,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    run: RunArgs,
    /// enforce: put back what drifted (default); detect: report drift only.
    #[arg(long, value_enum, default_value = "enforce")]
    mode: ModeArg,
    /// How often a full run happens without any event (e.g. 30m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    interval: Duration,
    /// How far each scheduled run may move, in percent of the interval (deterministic
    /// per node: a fleet does not run all at once).
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    jitter: f64,
    /// Seeds the schedule's phase and jitter (default: the host name).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// One run, then exit with its outcome (for cron and CI).
    #[arg(long)]
    once: bool,
    /// How long a burst of file events is gathered before the run it wakes.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_timeout)]
    debounce: Duration,
    /// Do not watch managed paths or the manifest (runs on the schedule, signals and
    /// `POST /run` only).
    #[arg(long)]
    no_watch: bool,
    /// A run taking longer is cancelled (starts nothing more) and counts as failed.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_timeout)]
    run_timeout: Duration,
    /// How long a stop waits for the run in flight before cancelling it.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    shutdown_grace: Duration,
    /// The first delay before retrying a failed run (doubling up to the interval).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    retry: Duration,
    /// Serve /metrics, /healthz, /readyz and POST /run here (e.g. 127.0.0.1:9464;
    /// port 0 picks one and prints it). Off unless given.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// How much history to keep, applied after each run (default: 90 days; any bound
    /// given replaces it).
    #[command(flatten)]
    keep: super::history::Keep,
    /// Never prune the history (it grows by about 0.5 KB per converged run).
    #[arg(long, conflicts_with_all = ["keep_runs", "keep_days"])]
    keep_all: bool,
    /// Take the desired state from a signed artifact (`tenet config push`):
    /// oci://host/repo:channel follows the channel; oci://host/repo@sha256:… pins
    /// the node. PATH is then the agent's directory (state, pulled artifacts).
    #[arg(long, value_name = "REFERENCE")]
    source: Option<String>,
    /// How often --source is asked whether it names a new artifact.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, requires = "source")]
    source_interval: Duration,
    /// A public key whose signatures --source accepts (repeatable; required with it).
    #[arg(long = "trust", value_name = "KEY.pub", requires = "source")]
    trust: Vec<std::path::PathBuf>,
    #[command(flatten)]
    registry: super::plugin::RegistryArgs,
    /// Report every run to a fleet's ingest service (`tenet fleet serve`), e.g.
    /// https://fleet.example.com; the node's name is --node-id.
    #[arg(long, value_name = "URL", env = "TENET_REPORT_URL")]
    report: Option<String>,
    /// The file holding this node's token (`tenet fleet enroll`); or TENET_REPORT_TOKEN.
    #[arg(long, value_name = "FILE", requires = "report")]
    report_token_file: Option<std::path::PathBuf>,
}

/// The agent's retention when none is given: a quarter of compliance history.
const DEFAULT_KEEP: Duration = Duration::from_secs(90 * 86_400);

pub async fn execute(args: AgentArgs) -> anyhow::Result<u8> {
    if !(0.0..=50.0).contains(&args.jitter) {
        anyhow::bail!("--jitter must be between 0 and 50 (percent of the interval)");
    }
    if args.interval < Duration::from_millis(100) {
        anyhow::bail!("--interval must be at least 100ms");
    }
    let mut session = args.manifest.session_options()?;
    let source = match &args.source {
        Some(reference) => {
            let reference = crate::distribution::oci::OciRef::parse(reference)?;
            let trusted = crate::distribution::bundle::keys_from_files(&args.trust)?;
            if trusted.is_empty() {
                anyhow::bail!(
                    "--source needs --trust KEY.pub: nothing is applied unless a trusted key signed it"
                );
            }
            let dir = &session.path;
            if !dir.is_dir() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: cannot create the agent's directory: {e}",
                        dir.display()
                    )
                })?;
            }
            // The state belongs to the agent's directory, not to an unpacked artifact.
            if session.state.explicit.is_none() {
                session.state.explicit = Some(dir.join(".tenet/state.db"));
            }
            Some(agent::source::SourceOptions {
                reference,
                trusted,
                registry: args.registry.options(),
                interval: args.source_interval,
                checkouts: dir.join(".tenet/source"),
            })
        }
        None => None,
    };
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(|| crate::state::Holder::me().host);
    let report = match &args.report {
        Some(url) => {
            let token = match &args.report_token_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--report-token-file {}: {e}", f.display()))?,
                None => std::env::var("TENET_REPORT_TOKEN").map_err(|_| {
                    anyhow::anyhow!(
                        "--report needs the node's token: --report-token-file FILE or TENET_REPORT_TOKEN"
                    )
                })?,
            };
            let token = token.trim().to_owned();
            if token.is_empty() {
                anyhow::bail!("--report: the node's token is empty");
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--report {url}: expected an http:// or https:// URL");
            }
            Some(crate::fleet::deliver::Target {
                url: url.clone(),
                token,
                node: node_id.clone(),
            })
        }
        None => None,
    };
    let opts = AgentOptions {
        session,
        mode: match args.mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Detect => Mode::Detect,
        },
        interval: args.interval,
        jitter: args.jitter / 100.0,
        once: args.once,
        debounce: args.debounce,
        run_timeout: args.run_timeout,
        shutdown_grace: args.shutdown_grace,
        listen: args.listen,
        watch: !args.no_watch,
        node_id,
        retry_base: args.retry,
        parallelism: args.run.parallelism,
        keep: match args.keep.retention() {
            _ if args.keep_all => crate::state::Retention::default(),
            k if k.is_set() => k,
            _ => crate::state::Retention {
                runs: None,
                age: Some(DEFAULT_KEEP),
            },
        },
        source,
        report,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, control) in [
        (SignalKind::terminate(), Control::Stop),
        (SignalKind::interrupt(), Control::Stop),
        (SignalKind::hangup(), Control::Reload),
        (SignalKind::user_defined1(), Control::RunNow),
    ] {
        let mut s = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(control).is_err() {
                    break;
                }
            }
        });
    }
    let mode = opts.mode.name();
    let started: agent::Started = Box::new(move |bound| match bound {
        Some(addr) => eprintln!("tenet agent ({mode}): serving http://{addr}/metrics"),
        None => eprintln!("tenet agent ({mode}): started"),
    });
    let once = opts.once;
    let ended = agent::run(opts, rx, started).await?;
    drop(tx);
    if !once {
        // Stopped: a clean exit, whatever the last run found (the metrics say that).
        return Ok(0);
    }
    Ok(match ended.last {
        Some(Outcome::Converged | Outcome::Changed) | None => 0,
        Some(Outcome::Drifted) => EXIT_CHANGES,
        Some(Outcome::Denied) => EXIT_DENIED,
        Some(Outcome::Failed | Outcome::Skipped) => EXIT_ERROR,
    })
}
