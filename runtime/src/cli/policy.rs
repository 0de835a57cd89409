//! `tenet policy`: `check` evaluates the preflight stage (the manifest and its grants,
//! no provider loaded) for CI; `input` prints the exact document policies read, to
//! develop them with `opa eval` or `conftest` too.

use super::{EXIT_DENIED, EXIT_ERROR, ManifestArgs, render};
use crate::policy::{self, Stage};
use crate::run::{self, AutoApprove, NoEvents, RunContext, Settings};
use crate::session::Session;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Evaluate the preflight stage: the manifest and its grants against the policies,
    /// without loading any provider. Exit 0 when allowed, 3 when denied, 1 on error.
    Check(CheckArgs),
    /// Print the input document policies read at a stage (JSON, `input_version` 1).
    Input(InputArgs),
    /// Run the policies' tests: every `test_*` rule (OPA's convention), usually in
    /// `*_test.rego` files. Exit 1 when one fails or when there is none.
    Test(TestArgs),
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Only the tests whose name (`data.package.test_x`) contains TEXT.
    #[arg(long = "run", value_name = "TEXT")]
    filter: Option<String>,
    /// Also report which lines of each policy file the tests evaluated.
    #[arg(long)]
    coverage: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StageArg {
    Preflight,
    Plan,
}

#[derive(Debug, Args)]
struct InputArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Which stage's input: `preflight` (no provider runs) or `plan` (plans first).
    #[arg(long, value_enum, default_value = "plan")]
    stage: StageArg,
}

pub async fn execute(args: PolicyArgs) -> anyhow::Result<u8> {
    match args.command {
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Input(a) => input(a).await,
        PolicyCommand::Test(a) => test(a),
    }
}

fn test(args: TestArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let (manifest, mut diags) =
        crate::session::load_manifest(&options.path, &options.load_options());
    let Some(config) = policy::PolicyConfig::of(&manifest) else {
        anyhow::bail!(
            "no policies: the manifest has no `policy:` section and there is no policy/ directory beside it"
        );
    };
    let ran = policy::test::run(&config, args.filter.as_deref(), args.coverage, &mut diags);
    let (results, coverage) = match (ran, diags.has_errors()) {
        (Some(r), false) => r,
        _ => {
            eprint!("{}", diags.sorted());
            return Ok(EXIT_ERROR);
        }
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"tests": results, "coverage": coverage})
            )?
        );
    } else {
        for r in &results {
            match &r.error {
                None => println!("{}: PASS ({} ms)", r.name, r.elapsed_ms),
                Some(e) => {
                    println!(
                        "{}: FAIL ({} ms)\n    at {}: {e}",
                        r.name, r.elapsed_ms, r.location
                    )
                }
            }
            for p in &r.prints {
                println!("    print: {p}");
            }
        }
        for c in &coverage {
            let total = c.covered + c.not_covered.len();
            let lines: Vec<String> = c.not_covered.iter().map(u32::to_string).collect();
            println!(
                "coverage {}: {}/{} lines{}",
                c.file,
                c.covered,
                total,
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(" (not evaluated: {})", lines.join(", "))
                }
            );
        }
        println!("{} passed, {failed} failed", results.len() - failed);
    }
    if results.is_empty() {
        eprintln!(
            "error: no tests{}: a policy set is tested by `test_*` rules (e.g. in policy/*_test.rego)",
            args.filter
                .as_deref()
                .map(|f| format!(" match `{f}`"))
                .unwrap_or_default()
        );
        return Ok(EXIT_ERROR);
    }
    Ok(if failed > 0 { EXIT_ERROR } else { 0 })
}

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let (manifest, mut diags) =
        crate::session::load_manifest(&options.path, &options.load_options());
    let decided = policy::preflight(&manifest, &[], &mut diags)?;
    if diags.has_errors() {
        return Err(diags
            .into_result()
            .err()
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("invalid")));
    }
    let Some((_, Some(decision))) = decided else {
        anyhow::bail!(
            "no policies: the manifest has no `policy:` section and there is no policy/ directory beside it"
        );
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        render::policy(std::slice::from_ref(&decision))?;
    }
    Ok(if decision.blocked() { EXIT_DENIED } else { 0 })
}

async fn input(args: InputArgs) -> anyhow::Result<u8> {
    let options = args.manifest.session_options()?;
    let run = policy::input::RunFacts::now();
    let doc = match args.stage {
        StageArg::Preflight => {
            let (manifest, diags) =
                crate::session::load_manifest(&options.path, &options.load_options());
            if diags.has_errors() {
                eprint!("{}", diags.sorted());
                return Ok(EXIT_ERROR);
            }
            policy::input::build(
                Stage::Preflight,
                None,
                &manifest,
                None,
                &Default::default(),
                &run,
            )
        }
        StageArg::Plan => {
            let session = Session::open(&options).await?;
            let planned = run::plan(&mut RunContext {
                session: &session,
                state: options.state,
                settings: Settings::default(),
                approve: &mut AutoApprove,
                events: &mut NoEvents,
            })
            .await?;
            policy::input::build(
                Stage::Plan,
                Some("plan"),
                &session.manifest,
                Some((&planned.plan, &planned.plan.providers)),
                &session.requested(),
                &run,
            )
        }
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}
