//! `tenet validate`: every problem in the manifest at once; reads nothing on the system.

use super::ManifestArgs;
use crate::session::Session;
use clap::Args;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
}

pub async fn execute(args: ValidateArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.manifest.session_options()?).await?;
    super::print_warnings(&session);
    println!(
        "The manifest is valid: {} resources, {} providers.",
        session.manifest.resources.len(),
        session.providers.len()
    );
    Ok(0)
}
