//! `tenet data explain KEY`: where a layered-data value comes from — each layer of the
//! manifest's `data:` hierarchy, whether it has the key, and which one won.

use super::ManifestArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Show every layer a key is looked up in (e.g. `nginx.worker_processes`).
    Explain {
        /// The key, dotted: `nginx.worker_processes` is `${ data.nginx.worker_processes }`.
        key: String,
        #[command(flatten)]
        manifest: ManifestArgs,
    },
}

pub fn execute(args: DataArgs) -> anyhow::Result<u8> {
    let DataCommand::Explain { key, manifest } = args.command;
    let options = manifest.session_options()?;
    let (m, diags) = crate::manifest::load(&options.path, &options.load_options());
    if diags.has_errors() {
        eprint!("{}", diags.sorted());
        return Ok(1);
    }
    let Some(data) = &m.data else {
        anyhow::bail!("the manifest declares no `data:` hierarchy");
    };
    for line in crate::manifest::data::explain(data, key.trim_start_matches("data.")) {
        println!("{}", crate::diag::one_line(&line));
    }
    Ok(0)
}
