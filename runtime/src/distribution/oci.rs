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
    #[error("{reference}: not a Tenet plugin bundle: {message}")]
    NotABundle { reference: String, message: String },
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
                message: chain(&e),
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
            message: chain(&e),
        },
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
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

/// Push a bundle (and its signature, if signed) to `r`; returns the manifest digest.
pub async fn push(
    r: &OciRef,
    b: &Bundle,
    signature: Option<&str>,
    options: &Options,
) -> Result<String, OciError> {
    if !r.is_loopback() && options.insecure_http {
        tracing::warn!(registry = r.registry(), "pushing over plain HTTP");
    }
    let client = client(r, options)?;
    let metadata = serde_json::to_vec_pretty(&b.metadata).map_err(|e| OciError::Registry {
        reference: r.text.clone(),
        message: e.to_string(),
    })?;
    let title = |name: String| {
        Some(std::collections::BTreeMap::from([(
            "org.opencontainers.image.title".to_owned(),
            name,
        )]))
    };
    let mut layers = vec![
        ImageLayer::new(
            b.component.clone(),
            WASM_MEDIA_TYPE.into(),
            title(format!("{}.wasm", b.metadata.name)),
        ),
        ImageLayer::new(
            metadata,
            METADATA_MEDIA_TYPE.into(),
            title("metadata.json".into()),
        ),
    ];
    if let Some(sig) = signature {
        layers.push(ImageLayer::new(
            sig.as_bytes().to_vec(),
            SIGNATURE_MEDIA_TYPE.into(),
            title(format!("{}.wasm.minisig", b.metadata.name)),
        ));
    }
    let wasm_digest = format!("sha256:{}", b.metadata.component_sha256);
    let config = Config::new(config_blob(b, &wasm_digest), CONFIG_MEDIA_TYPE.into(), None);
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

fn size_of(d: &OciDescriptor) -> u64 {
    u64::try_from(d.size).unwrap_or(u64::MAX)
}

/// Pull the bundle `r` names: check the manifest's media types and sizes first, then
/// download each blob (verified against its digest) within its limit.
pub async fn pull(r: &OciRef, options: &Options) -> Result<Pulled, OciError> {
    let client = client(r, options)?;
    let auth = auth(r, options)?;
    let (manifest, manifest_digest) = client
        .pull_image_manifest(&r.reference, &auth)
        .await
        .map_err(|e| map_err(r, e))?;
    let not_bundle = |message: String| OciError::NotABundle {
        reference: r.text.clone(),
        message,
    };
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not_bundle(format!(
            "its config has media type `{}`, expected `{CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        )));
    }
    if size_of(&manifest.config) > MAX_CONFIG_BYTES {
        return Err(not_bundle(format!(
            "its config is {} bytes (limit {MAX_CONFIG_BYTES})",
            manifest.config.size
        )));
    }
    let mut wasm = None;
    let mut meta = None;
    let mut sig = None;
    for layer in &manifest.layers {
        let (slot, limit) = match layer.media_type.as_str() {
            WASM_MEDIA_TYPE => (&mut wasm, crate::distribution::bundle::MAX_COMPONENT_BYTES),
            METADATA_MEDIA_TYPE => (&mut meta, MAX_METADATA_BYTES),
            SIGNATURE_MEDIA_TYPE => (&mut sig, MAX_SIGNATURE_BYTES),
            other => {
                return Err(not_bundle(format!(
                    "unexpected layer media type `{other}` (a bundle has `{WASM_MEDIA_TYPE}`, `{METADATA_MEDIA_TYPE}` and optionally `{SIGNATURE_MEDIA_TYPE}`)"
                )));
            }
        };
        if slot.is_some() {
            return Err(not_bundle(format!(
                "more than one `{}` layer",
                layer.media_type
            )));
        }
        if size_of(layer) > limit {
            return Err(not_bundle(format!(
                "its `{}` layer is {} bytes (limit {limit})",
                layer.media_type, layer.size
            )));
        }
        *slot = Some((layer, limit));
    }
    let (Some(wasm), Some(meta)) = (wasm, meta) else {
        return Err(not_bundle(format!(
            "it needs one `{WASM_MEDIA_TYPE}` and one `{METADATA_MEDIA_TYPE}` layer"
        )));
    };
    let fetch = async |(layer, limit): (&OciDescriptor, u64)| -> Result<Vec<u8>, OciError> {
        let mut out = Capped {
            data: Vec::with_capacity(usize::try_from(size_of(layer).min(limit)).unwrap_or(0)),
            limit,
        };
        client
            .pull_blob(&r.reference, layer, &mut out)
            .await
            .map_err(|e| map_err(r, e))?;
        if out.data.len() as u64 != size_of(layer) {
            return Err(not_bundle(format!(
                "its `{}` layer is {} bytes, the manifest says {}",
                layer.media_type,
                out.data.len(),
                layer.size
            )));
        }
        Ok(out.data)
    };
    let component = fetch(wasm).await?;
    let metadata = fetch(meta).await?;
    let signature = match sig {
        Some(s) => Some(
            String::from_utf8(fetch(s).await?)
                .map_err(|_| not_bundle("its signature layer is not text".into()))?,
        ),
        None => None,
    };
    let bundle = Bundle::from_parts(std::path::Path::new(&r.text), &metadata, component)?;
    Ok(Pulled {
        bundle,
        signature,
        manifest_digest,
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
