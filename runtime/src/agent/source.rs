//! `tenet agent --source oci://…:channel`: the desired state comes from a signed artifact
//! in a registry ([`crate::distribution::artifact`]). Each poll asks the registry what
//! the reference names now (one HEAD request); only a new digest is pulled, verified
//! against the trusted keys and unpacked under the agent's directory
//! (`.tenet/source/sha256-…`), and it becomes the manifest from the next run on.
//!
//! - Nothing unsigned, untrusted or altered is ever unpacked or applied; a refused digest
//!   is not pulled again until the reference names another one.
//! - The last good artifact stays in force while the registry is away or serves
//!   something refused, across restarts too (`.tenet/source/current.json`).
//! - A reference by digest (`…@sha256:…`) pins the node: it never moves.

use crate::distribution::artifact::{self, ArtifactError, Checkouts, Current};
use crate::distribution::oci::{self, OciRef};
use crate::manifest::TrustedKey;
use std::path::PathBuf;
use std::time::Duration;

/// Where the agent's desired state comes from.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub reference: OciRef,
    pub trusted: Vec<TrustedKey>,
    pub registry: oci::Options,
    /// How often the reference is checked for a new digest.
    pub interval: Duration,
    /// Where pulled artifacts are unpacked.
    pub checkouts: PathBuf,
}

/// The source's state between polls.
pub struct Source {
    pub opts: SourceOptions,
    checkouts: Checkouts,
    /// The artifact in force, and its directory.
    current: Option<(Current, PathBuf)>,
    /// A digest refused already (not pulled again while the reference names it).
    refused: Option<String>,
    /// The node's name: what a roll-out's selector chooses by.
    node: String,
    /// The last selector read (its digest, and the artifact it chose for this node).
    selected: Option<(String, String)>,
}

impl Source {
    /// A source for node `node` starting from the last good artifact unpacked here, if
    /// any.
    pub fn new(opts: SourceOptions, node: &str) -> Source {
        let checkouts = Checkouts::new(opts.checkouts.clone());
        let current = checkouts.current().map(|c| {
            let dir = checkouts.dir(&c.digest);
            (c, dir)
        });
        Source {
            opts,
            checkouts,
            current,
            refused: None,
            node: node.to_owned(),
            selected: None,
        }
    }

    /// The artifact digest the reference's `digest` stands for on this node: itself, or,
    /// when it is a roll-out's selector, the artifact it chooses for this node.
    async fn choose(&mut self, digest: String) -> Result<String, ArtifactError> {
        if let Some((sel, chosen)) = &self.selected
            && *sel == digest
        {
            return Ok(chosen.clone());
        }
        let r = self.opts.reference.at_digest(&digest);
        let (_, config) = oci::config_if(
            &r,
            crate::fleet::rollout::SELECTOR_MEDIA_TYPE,
            &self.opts.registry,
        )
        .await?;
        let chosen = match config {
            Some(bytes) => {
                let sel: crate::fleet::rollout::Selector =
                    serde_json::from_slice(&bytes).map_err(|e| ArtifactError::Content {
                        reference: r.text.clone(),
                        message: format!("not a roll-out selector: {e}"),
                    })?;
                let chosen = sel.choose(&self.node).to_owned();
                tracing::info!(
                    rollout = sel.rollout,
                    chosen = %chosen,
                    "the channel is in a roll-out"
                );
                chosen
            }
            None => digest.clone(),
        };
        self.selected = Some((digest, chosen.clone()));
        Ok(chosen)
    }

    /// The artifact in force.
    pub fn current(&self) -> Option<&(Current, PathBuf)> {
        self.current.as_ref()
    }

    /// Ask the registry; `Ok(true)` when a new artifact was verified and unpacked (it is
    /// [`Source::current`] now), `Ok(false)` when nothing changed. An error leaves the
    /// current artifact in force.
    pub async fn poll(&mut self) -> Result<bool, ArtifactError> {
        let digest = oci::resolve(&self.opts.reference, &self.opts.registry).await?;
        let digest = self.choose(digest).await?;
        let r = &self.opts.reference;
        if self
            .current
            .as_ref()
            .is_some_and(|(c, _)| c.digest == digest)
        {
            return Ok(false);
        }
        if self.refused.as_deref() == Some(digest.as_str()) {
            return Ok(false);
        }
        let installed = match artifact::pull(&r.at_digest(&digest), &self.opts.registry).await {
            Ok(fetched) => self
                .checkouts
                .install(&fetched, &r.text, &self.opts.trusted),
            Err(e) => Err(e),
        };
        match installed {
            Ok(current) => {
                self.refused = None;
                self.current = Some(current);
                Ok(true)
            }
            Err(e) => {
                // What the registry could not serve is asked again; what it served and
                // was refused is not, until the reference moves.
                if !e.is_transient() {
                    self.refused = Some(digest);
                }
                Err(e)
            }
        }
    }
}
