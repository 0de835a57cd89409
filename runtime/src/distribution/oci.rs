//! Plugin bundles in OCI registries, through `oci-client`.
//!
//! A bundle is an OCI image manifest in the CNCF Wasm artifact layout — config
//! `application/vnd.wasm.config.v0+json`, the component as an `application/wasm` layer —
//! plus a layer with Tenet's metadata and, when signed, one with the minisign signature,
//! so `wkg oci pull` / `oras` / `skopeo` can fetch it. Everything pulled is checked before
//! it is returned: media types, sizes (from the manifest, before downloading), every
//! blob's sha256 (`oci-client` verifies while streaming), and the metadata against the
//! component. Plain HTTP is used only for loopback registries or with `insecure`.

use crate::distribution::bundle::{self, Bundle, MAX_METADATA_BYTES, MAX_SIGNATURE_BYTES};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The CNCF Wasm OCI artifact config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// Tenet's bundle metadata layer (the bundle's `metadata.json`).
pub const METADATA_MEDIA_TYPE: &str = "application/vnd.tenet.plugin.metadata.v1+json";
/// The detached minisign signature over the component.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.tenet.plugin.signature.v1+minisign";
/// Largest config blob accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// How long to wait for a registry to accept a connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one read from a registry may stall.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{text}` is not an OCI reference ({message}); expected oci://host[:port]/repository:tag or oci://host[:port]/repository@sha256:DIGEST"
    )]
    BadReference { text: String, message: String },
    #[error("cannot reach registry {registry} for {reference}: {message}")]
    Unreachable {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("{reference}: not found in the registry ({message})")]
    NotFound { reference: String, message: String },
    #[error(
        "{reference}: the registry wants credentials or refused the ones given ({message}); set them with `docker login` or TENET_REGISTRY_USERNAME / TENET_REGISTRY_PASSWORD"
    )]
    Unauthorized { reference: String, message: String },
    #[error(
        "{reference}: content does not match its digest (expected {expected}, got {actual}); the registry or something between is serving altered bytes"
    )]
    Digest {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: not {what}: {message}")]
    NotABundle {
        reference: String,
        what: String,
        message: String,
    },
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone)]
pub struct OciRef {
    /// As written (with `oci://`).
    pub text: String,
    reference: Reference,
}

impl OciRef {
    pub fn parse(text: &str) -> Result<OciRef, OciError> {
        let bad = |message: String| OciError::BadReference {
            text: text.to_owned(),
            message,
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://".into()))?;
        // Without an explicit registry, a reference would silently mean Docker Hub.
        let host = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost")
        {
            return Err(bad(format!("`{host}` is not a registry host")));
        }
        let reference: Reference = rest.parse().map_err(|e| bad(format!("{e}")))?;
        if !rest.contains('@') && !rest.rsplit('/').next().unwrap_or_default().contains(':') {
            return Err(bad("it names neither a tag nor a digest".into()));
        }
        Ok(OciRef {
            text: text.to_owned(),
            reference,
        })
    }

    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The same repository at `digest` (`sha256:…`).
    pub fn at_digest(&self, digest: &str) -> OciRef {
        let reference = self.reference.clone_with_digest(digest.to_owned());
        OciRef {
            text: format!(
                "oci://{}/{}@{digest}",
                reference.registry(),
                reference.repository()
            ),
            reference,
        }
    }

    /// The same repository at tag `tag`.
    pub fn with_tag(&self, tag: &str) -> OciRef {
        let reference = Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        );
        OciRef {
            text: format!(
                "oci://{}/{}:{tag}",
                reference.registry(),
                reference.repository()
            ),
            reference,
        }
    }

    /// The digest the reference pins, if it names one.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    fn is_loopback(&self) -> bool {
        let host = self.registry();
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Allow plain HTTP to non-loopback registries.
    pub insecure_http: bool,
}

/// A bundle as pulled: verified against its digests, not yet against any key.
#[derive(Debug)]
pub struct Pulled {
    pub bundle: Bundle,
    pub signature: Option<String>,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
}

/// Plain HTTP for loopback registries or with `insecure_http`; HTTPS otherwise.
fn protocol(r: &OciRef, options: &Options) -> ClientProtocol {
    if r.is_loopback() {
        ClientProtocol::HttpsExcept(vec![r.registry().to_owned()])
    } else if options.insecure_http {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    }
}

fn client(r: &OciRef, options: &Options) -> Result<Client, OciError> {
    // reqwest's rustls needs a process-wide crypto provider; ring is the one wasmtime's
    // HTTP stack already links. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(ClientConfig {
        protocol: protocol(r, options),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    })
    .map_err(|e| map_err(r, e))
}

/// Credentials for `r`: TENET_REGISTRY_USERNAME / TENET_REGISTRY_PASSWORD when
/// TENET_REGISTRY_HOST names this registry (so a manifest naming another registry never
/// receives them), else the docker config (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`, credential helpers included, matched per registry), else
/// anonymous. Credentials are never sent over plain HTTP to a registry off this machine.
fn auth(r: &OciRef, options: &Options) -> Result<RegistryAuth, OciError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let from_env = match (
        env("TENET_REGISTRY_USERNAME"),
        env("TENET_REGISTRY_PASSWORD"),
    ) {
        (Some(user), Some(pass)) => match env("TENET_REGISTRY_HOST") {
            Some(host) if host == r.registry() => Some(RegistryAuth::Basic(user, pass)),
            Some(_) => None,
            None => {
                tracing::warn!(
                    "TENET_REGISTRY_USERNAME/PASSWORD ignored: set TENET_REGISTRY_HOST to the registry they are for"
                );
                None
            }
        },
        _ => None,
    };
    let auth = from_env.unwrap_or_else(|| {
        match docker_credential::get_credential(r.reference.resolve_registry()) {
            Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
                RegistryAuth::Basic(u, p)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => RegistryAuth::Bearer(t),
            Err(_) => RegistryAuth::Anonymous,
        }
    });
    if !matches!(auth, RegistryAuth::Anonymous)
        && matches!(protocol(r, options), ClientProtocol::Http)
    {
        return Err(OciError::Registry {
            reference: r.text.clone(),
            message: format!(
                "refusing to send credentials over plain HTTP to {}, which is not on this machine",
                r.registry()
            ),
        });
    }
    Ok(auth)
}

fn map_err(r: &OciRef, e: OciDistributionError) -> OciError {
    let reference = r.text.clone();
    match e {
        OciDistributionError::RequestError(ref re) if re.is_connect() || re.is_timeout() => {
            OciError::Unreachable {
                registry: r.registry().to_owned(),
                reference,
                message: crate::diag::error_chain(&e),
            }
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            OciError::NotFound {
                reference,
                message: envelope
                    .errors
                    .iter()
                    .map(|x| x.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        }
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => OciError::NotFound {
            reference,
            message: e.to_string(),
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => OciError::Unauthorized {
            reference,
            message: match &e {
                OciDistributionError::ServerError { code, .. } => format!("HTTP {code}"),
                other => other.to_string(),
            },
        },
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => OciError::Digest {
            reference,
            expected,
            actual,
        },
        _ => OciError::Registry {
            reference,
            message: crate::diag::error_chain(&e),
        },
    }
}

/// The config blob: the CNCF Wasm config, deterministic (no timestamp), so the same
/// bundle always has the same manifest digest.
fn config_blob(b: &Bundle, wasm_digest: &str) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [wasm_digest],
        "component": {
            "exports": [format!("{}@{}", crate::provider::ABI_INTERFACE, b.metadata.abi)],
            "imports": b.metadata.capabilities.imports,
            "target": null,
        },
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

/// One blob of an artifact: its bytes, media type and (for layers) file name.
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub media_type: &'static str,
    /// `org.opencontainers.image.title`, so `oras pull` names the file.
    pub title: Option<String>,
}

/// Push an artifact (an image manifest of `config` and `layers`, with `annotations`)
/// to `r`; returns the manifest digest. The same blobs always give the same digest.
pub async fn push_artifact(
    r: &OciRef,
    config: Blob,
    layers: Vec<Blob>,
    annotations: std::collections::BTreeMap<String, String>,
    options: &Options,
) -> Result<String, OciError> {
    if !r.is_loopback() && options.insecure_http {
        tracing::warn!(registry = r.registry(), "pushing over plain HTTP");
    }
    let client = client(r, options)?;
    let layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|b| {
            ImageLayer::new(
                b.data,
                b.media_type.into(),
                b.title.map(|name| {
                    std::collections::BTreeMap::from([(
                        "org.opencontainers.image.title".to_owned(),
                        name,
                    )])
                }),
            )
        })
        .collect();
    let config = Config::new(config.data, config.media_type.into(), None);
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
    let auth = auth(r, options)?;
    client
        .push(&r.reference, &layers, config, &auth, Some(manifest))
        .await
        .map_err(|e| map_err(r, e))?;
    client
        .fetch_manifest_digest(&r.reference, &auth)
        .await
        .map_err(|e| map_err(r, e))
}

/// The digest a reference names now (a tag is asked of the registry: one HEAD request;
/// a digest is itself).
pub async fn resolve(r: &OciRef, options: &Options) -> Result<String, OciError> {
    if let Some(d) = r.digest() {
        return Ok(d.to_owned());
    }
    let client = client(r, options)?;
    let auth = auth(r, options)?;
    client
        .fetch_manifest_digest(&r.reference, &auth)
        .await
        .map_err(|e| map_err(r, e))
}

/// Point the tag `to` at the manifest `from` names (same repository or another on the
/// same registry; its blobs must be there): the manifest's bytes are put unchanged, so
/// the digest stays. Returns the digest.
pub async fn tag(from: &OciRef, to: &OciRef, options: &Options) -> Result<String, OciError> {
    if from.registry() != to.registry() {
        return Err(OciError::Registry {
            reference: to.text.clone(),
            message: format!(
                "a tag can only name a manifest of its own registry ({} is not {})",
                to.registry(),
                from.registry()
            ),
        });
    }
    let client = client(from, options)?;
    let auth = auth(from, options)?;
    let accepted = [OCI_IMAGE_MEDIA_TYPE];
    let (bytes, digest) = client
        .pull_manifest_raw(&from.reference, &auth, &accepted)
        .await
        .map_err(|e| map_err(from, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(OciError::Registry {
            reference: from.text.clone(),
            message: format!(
                "its manifest is {} bytes (limit {MAX_MANIFEST_BYTES})",
                bytes.len()
            ),
        });
    }
    let header = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
    client
        .push_manifest_raw(&to.reference, bytes.to_vec(), header)
        .await
        .map_err(|e| map_err(to, e))?;
    Ok(digest)
}

/// The config media type of the manifest `r` names and, when it is `want`, the config
/// itself (within [`MAX_CONFIG_BYTES`], checked against its digest).
pub async fn config_if(
    r: &OciRef,
    want: &str,
    options: &Options,
) -> Result<(String, Option<Vec<u8>>), OciError> {
    let client = client(r, options)?;
    let auth = auth(r, options)?;
    let (manifest, _) = client
        .pull_image_manifest(&r.reference, &auth)
        .await
        .map_err(|e| map_err(r, e))?;
    let media = manifest.config.media_type.clone();
    if media != want {
        return Ok((media, None));
    }
    if size_of(&manifest.config) > MAX_CONFIG_BYTES {
        return Err(OciError::Registry {
            reference: r.text.clone(),
            message: format!(
                "its config is {} bytes (limit {MAX_CONFIG_BYTES})",
                manifest.config.size
            ),
        });
    }
    let mut out = Capped {
        data: Vec::new(),
        limit: MAX_CONFIG_BYTES,
    };
    client
        .pull_blob(&r.reference, &manifest.config, &mut out)
        .await
        .map_err(|e| map_err(r, e))?;
    Ok((media, Some(out.data)))
}

/// Largest image manifest handled by [`tag`].
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A layer an artifact kind expects: its media type, size limit and whether it must
/// be there.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub media_type: &'static str,
    pub limit: u64,
    pub required: bool,
    /// Download it (else only its descriptor is checked and returned: the caller has
    /// the bytes already).
    pub fetch: bool,
}

/// An artifact as pulled: every blob checked against its digest and its limit.
#[derive(Debug)]
pub struct PulledArtifact {
    pub config: Vec<u8>,
    /// By media type (each at most once), those fetched.
    pub layers: std::collections::BTreeMap<&'static str, Vec<u8>>,
    /// Every layer's digest and size, by media type.
    pub descriptors: std::collections::BTreeMap<&'static str, (String, u64)>,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Pull the artifact `r` names, of the kind `what` (for messages) with config media
/// type `config_type` and the layers `specs`: the manifest's media types and sizes are
/// checked first, then each blob is downloaded (verified against its digest) within its
/// limit. A layer of any other media type, or twice the same, is refused.
pub async fn pull_artifact(
    r: &OciRef,
    what: &str,
    config_type: &str,
    specs: &[LayerSpec],
    options: &Options,
) -> Result<PulledArtifact, OciError> {
    let client = client(r, options)?;
    let auth = auth(r, options)?;
    let (manifest, manifest_digest) = client
        .pull_image_manifest(&r.reference, &auth)
        .await
        .map_err(|e| map_err(r, e))?;
    let not_it = |message: String| OciError::NotABundle {
        reference: r.text.clone(),
        what: what.to_owned(),
        message,
    };
    if manifest.config.media_type != config_type {
        return Err(not_it(format!(
            "its config has media type `{}`, expected `{config_type}`",
            manifest.config.media_type
        )));
    }
    if size_of(&manifest.config) > MAX_CONFIG_BYTES {
        return Err(not_it(format!(
            "its config is {} bytes (limit {MAX_CONFIG_BYTES})",
            manifest.config.size
        )));
    }
    let mut found: std::collections::BTreeMap<&'static str, &OciDescriptor> =
        std::collections::BTreeMap::new();
    for layer in &manifest.layers {
        let Some(spec) = specs.iter().find(|s| s.media_type == layer.media_type) else {
            return Err(not_it(format!(
                "unexpected layer media type `{}` (expected: {})",
                layer.media_type,
                specs
                    .iter()
                    .map(|s| format!("`{}`", s.media_type))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if found.insert(spec.media_type, layer).is_some() {
            return Err(not_it(format!(
                "more than one `{}` layer",
                layer.media_type
            )));
        }
        if size_of(layer) > spec.limit {
            return Err(not_it(format!(
                "its `{}` layer is {} bytes (limit {})",
                layer.media_type, layer.size, spec.limit
            )));
        }
    }
    if let Some(missing) = specs
        .iter()
        .find(|s| s.required && !found.contains_key(s.media_type))
    {
        return Err(not_it(format!("it has no `{}` layer", missing.media_type)));
    }
    let fetch = async |d: &OciDescriptor, limit: u64| -> Result<Vec<u8>, OciError> {
        let mut out = Capped {
            data: Vec::with_capacity(usize::try_from(size_of(d).min(limit)).unwrap_or(0)),
            limit,
        };
        client
            .pull_blob(&r.reference, d, &mut out)
            .await
            .map_err(|e| map_err(r, e))?;
        if out.data.len() as u64 != size_of(d) {
            return Err(not_it(format!(
                "its `{}` blob is {} bytes, the manifest says {}",
                d.media_type,
                out.data.len(),
                d.size
            )));
        }
        Ok(out.data)
    };
    let config = fetch(&manifest.config, MAX_CONFIG_BYTES).await?;
    let mut layers = std::collections::BTreeMap::new();
    for spec in specs.iter().filter(|s| s.fetch) {
        if let Some(d) = found.get(spec.media_type) {
            layers.insert(spec.media_type, fetch(d, spec.limit).await?);
        }
    }
    let descriptors = found
        .iter()
        .map(|(m, d)| (*m, (d.digest.clone(), size_of(d))))
        .collect();
    Ok(PulledArtifact {
        config,
        layers,
        descriptors,
        manifest_digest,
        annotations: manifest
            .annotations
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

/// Push a bundle (and its signature, if signed) to `r`; returns the manifest digest.
pub async fn push(
    r: &OciRef,
    b: &Bundle,
    signature: Option<&str>,
    options: &Options,
) -> Result<String, OciError> {
    let metadata = serde_json::to_vec_pretty(&b.metadata).map_err(|e| OciError::Registry {
        reference: r.text.clone(),
        message: e.to_string(),
    })?;
    let mut layers = vec![
        Blob {
            data: b.component.clone(),
            media_type: WASM_MEDIA_TYPE,
            title: Some(format!("{}.wasm", b.metadata.name)),
        },
        Blob {
            data: metadata,
            media_type: METADATA_MEDIA_TYPE,
            title: Some("metadata.json".into()),
        },
    ];
    if let Some(sig) = signature {
        layers.push(Blob {
            data: sig.as_bytes().to_vec(),
            media_type: SIGNATURE_MEDIA_TYPE,
            title: Some(format!("{}.wasm.minisig", b.metadata.name)),
        });
    }
    let wasm_digest = format!("sha256:{}", b.metadata.component_sha256);
    let config = Blob {
        data: config_blob(b, &wasm_digest),
        media_type: CONFIG_MEDIA_TYPE,
        title: None,
    };
    let annotations = std::collections::BTreeMap::from([
        (
            "org.opencontainers.image.version".to_owned(),
            b.metadata.version.clone(),
        ),
        (
            "org.opencontainers.image.description".to_owned(),
            b.metadata.description.clone(),
        ),
    ]);
    push_artifact(r, config, layers, annotations, options).await
}

fn size_of(d: &OciDescriptor) -> u64 {
    u64::try_from(d.size).unwrap_or(u64::MAX)
}

/// Pull the bundle `r` names (see [`pull_artifact`]).
pub async fn pull(r: &OciRef, options: &Options) -> Result<Pulled, OciError> {
    let mut pulled = pull_artifact(
        r,
        "a Tenet plugin bundle",
        CONFIG_MEDIA_TYPE,
        &[
            LayerSpec {
                media_type: WASM_MEDIA_TYPE,
                limit: crate::distribution::bundle::MAX_COMPONENT_BYTES,
                required: true,
                fetch: true,
            },
            LayerSpec {
                media_type: METADATA_MEDIA_TYPE,
                limit: MAX_METADATA_BYTES,
                required: true,
                fetch: true,
            },
            LayerSpec {
                media_type: SIGNATURE_MEDIA_TYPE,
                limit: MAX_SIGNATURE_BYTES,
                required: false,
                fetch: true,
            },
        ],
        options,
    )
    .await?;
    let mut take = |m: &str| pulled.layers.remove(m).unwrap_or_default();
    let component = take(WASM_MEDIA_TYPE);
    let metadata = take(METADATA_MEDIA_TYPE);
    let signature = match pulled.layers.remove(SIGNATURE_MEDIA_TYPE) {
        Some(s) => Some(String::from_utf8(s).map_err(|_| OciError::NotABundle {
            reference: r.text.clone(),
            what: "a Tenet plugin bundle".into(),
            message: "its signature layer is not text".into(),
        })?),
        None => None,
    };
    let bundle = Bundle::from_parts(std::path::Path::new(&r.text), &metadata, component)?;
    Ok(Pulled {
        bundle,
        signature,
        manifest_digest: pulled.manifest_digest,
    })
}

/// A writer that refuses more than `limit` bytes: a registry cannot make us buffer more
/// than the manifest declared (and the limit allows).
struct Capped {
    data: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.data.len() + buf.len()) as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "blob larger than the {}-byte limit",
                self.limit
            ))));
        }
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_registries_or_when_asked() {
        let strict = Options::default();
        let insecure = Options {
            insecure_http: true,
        };
        for local in [
            "oci://127.0.0.1:5000/a/b:1",
            "oci://127.9.9.9/a/b:1",
            "oci://localhost:5000/a/b:1",
        ] {
            let r = OciRef::parse(local).expect(local);
            assert!(
                matches!(protocol(&r, &strict), ClientProtocol::HttpsExcept(ref h) if h == &vec![r.registry().to_owned()]),
                "{local}"
            );
        }
        for remote in [
            "oci://registry.example.com/a/b:1",
            "oci://10.0.0.1:5000/a/b:1",
            "oci://127.0.0.1.nip.io/a/b:1",
        ] {
            let r = OciRef::parse(remote).expect(remote);
            assert!(
                matches!(protocol(&r, &strict), ClientProtocol::Https),
                "{remote}"
            );
            assert!(
                matches!(protocol(&r, &insecure), ClientProtocol::Http),
                "{remote}"
            );
        }
    }

    #[test]
    fn references_name_a_registry_and_a_tag_or_digest() {
        let ok = OciRef::parse("oci://ghcr.io/acme/nginx:1.2.0").expect("tag");
        assert_eq!(ok.registry(), "ghcr.io");
        let d = format!("oci://ghcr.io/acme/nginx@sha256:{}", "a".repeat(64));
        assert!(OciRef::parse(&d).expect("digest").digest().is_some());
        for (bad, why) in [
            ("ghcr.io/acme/nginx:1", "does not start with oci://"),
            ("oci://acme/nginx:1", "not a registry host"),
            ("oci://ghcr.io/acme/nginx", "neither a tag nor a digest"),
            (
                "oci://ghcr.io/acme/nginx@sha256:abc",
                "not an OCI reference",
            ),
        ] {
            let e = OciRef::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
