//! `credentials:` on a net grant: a header the host adds to every request to that one
//! origin, so the provider — and so any log, plan, state or error it produces — never
//! sees the secret.
//!
//! `ca:` on the same mapping names a PEM bundle (relative to the manifest) whose
//! certificates are the only roots trusted for that origin's TLS: a private CA.
//!
//! ```yaml
//! net:
//!   - origin: https://registry.internal:8443
//!     ca: certs/internal-ca.pem
//!   - origin: https://api.example.com
//!     credentials: {bearer: "${var.api_token}"}       # authorization: Bearer …
//!   - origin: http://127.0.0.1:9000
//!     credentials: {header: x-api-key, value_env: API_KEY}   # from Tenet's environment
//!   - origin: http://127.0.0.1:9100
//!     credentials: {basic: {username: deploy, password: "${var.pw}"}}
//! ```

use super::load::{object, type_name};
use super::yaml::Spans;
use super::{CaBundle, Credentials, NetGrant};
use crate::diag::Diagnostics;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::path::Path;

/// Fewest bytes of a secret: the host removes it from responses wherever it appears,
/// which a very short one would make useless (and guessable).
pub const MIN_SECRET_BYTES: usize = 8;
/// Most bytes of a brokered header value.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

fn text<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    at: &str,
    spans: &Spans,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<&'a str> {
    match map.get(key)? {
        Value::String(s) => Some(s),
        other => {
            diags.error(
                Some(spans.value(&format!("{at}/{key}"))),
                format!(
                    "{key} of {what} must be a string, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// A net grant written as a mapping: `{origin: …, credentials: {…}}`.
pub(super) fn parse_grant(
    item: &Value,
    at: &str,
    spans: &Spans,
    what: &str,
    dir: &Path,
    diags: &mut Diagnostics,
) -> Option<NetGrant> {
    let grant_what = format!("a net grant of {what}");
    let map = object(
        item,
        at,
        spans,
        &grant_what,
        &["origin", "credentials", "ca"],
        diags,
    )?;
    let Some(origin) = text(map, "origin", at, spans, &grant_what, diags) else {
        if !map.contains_key("origin") {
            diags.error(
                Some(spans.value(at)),
                format!("{grant_what} needs `origin` (e.g. `https://api.example.com`)"),
            );
        }
        return None;
    };
    let mut grant = match NetGrant::parse(origin) {
        Ok(g) => g,
        Err(message) => {
            diags.error(
                Some(spans.value(&format!("{at}/origin"))),
                format!("{grant_what}: {message}"),
            );
            return None;
        }
    };
    if let Some(ca) = text(map, "ca", at, spans, &grant_what, diags) {
        grant.ca = Some(ca_bundle(
            ca,
            origin,
            &grant,
            &format!("{at}/ca"),
            spans,
            dir,
            diags,
        )?);
    }
    let Some(c) = map.get("credentials").filter(|v| !v.is_null()) else {
        return Some(grant);
    };
    let at = format!("{at}/credentials");
    let what = format!("the credentials for {origin}");
    if !grant.is_exact() {
        diags.error(
            Some(spans.value(&at)),
            format!(
                "{what}: credentials go to exactly one origin; `{origin}` is a pattern (no `*.` host or `*` port with credentials)"
            ),
        );
        return None;
    }
    let c = object(
        c,
        &at,
        spans,
        &what,
        &[
            "header",
            "bearer",
            "value",
            "basic",
            "bearer_env",
            "value_env",
        ],
        diags,
    )?;
    let header = text(c, "header", &at, spans, &what, diags)
        .unwrap_or("authorization")
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        diags.error(
            Some(spans.value(&format!("{at}/header"))),
            format!("{what}: `{header}` is not a header name"),
        );
        return None;
    }
    let given: Vec<&str> = ["bearer", "value", "basic", "bearer_env", "value_env"]
        .into_iter()
        .filter(|k| c.contains_key(*k))
        .collect();
    if given.len() != 1 {
        diags.error(
            Some(spans.value(&at)),
            format!(
                "{what}: give exactly one of `bearer`, `value`, `basic`, `bearer_env` or `value_env`, found {}",
                if given.is_empty() { "none".to_owned() } else { given.join(", ") }
            ),
        );
        return None;
    }
    let env = |key: &str, diags: &mut Diagnostics| -> Option<(String, String)> {
        let name = text(c, key, &at, spans, &what, diags)?;
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Some((v, format!("env {name}"))),
            _ => {
                diags.error(
                    Some(spans.value(&format!("{at}/{key}"))),
                    format!("{what}: the environment variable `{name}` is not set in Tenet's environment"),
                );
                None
            }
        }
    };
    let (value, forms, source) = match given[0] {
        "bearer" => {
            let t = text(c, "bearer", &at, spans, &what, diags)?.to_owned();
            (format!("Bearer {t}"), vec![t], "bearer".to_owned())
        }
        "bearer_env" => {
            let (t, source) = env("bearer_env", diags)?;
            (format!("Bearer {t}"), vec![t], source)
        }
        "value" => {
            let v = text(c, "value", &at, spans, &what, diags)?.to_owned();
            (v.clone(), vec![v], "value".to_owned())
        }
        "value_env" => {
            let (v, source) = env("value_env", diags)?;
            (v.clone(), vec![v], source)
        }
        _ => {
            let b = object(
                c.get("basic").unwrap_or(&Value::Null),
                &format!("{at}/basic"),
                spans,
                &format!("basic {what}"),
                &["username", "password"],
                diags,
            )?;
            let user = text(b, "username", &format!("{at}/basic"), spans, &what, diags)?;
            let password = text(b, "password", &format!("{at}/basic"), spans, &what, diags)?;
            if user.contains(':') {
                diags.error(
                    Some(spans.value(&format!("{at}/basic/username"))),
                    format!("{what}: a basic username cannot contain `:`"),
                );
                return None;
            }
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (
                format!("Basic {token}"),
                vec![token, password.to_owned()],
                "basic".to_owned(),
            )
        }
    };
    if value.is_empty()
        || value.len() > MAX_CREDENTIAL_BYTES
        || http::HeaderValue::from_str(&value).is_err()
        || forms.iter().any(|f| f.len() < MIN_SECRET_BYTES)
    {
        diags.error(
            Some(spans.value(&at)),
            format!(
                "{what}: the secret must be {MIN_SECRET_BYTES} to {MAX_CREDENTIAL_BYTES} bytes of visible text (no line breaks); a shorter one could not be kept out of responses reliably"
            ),
        );
        return None;
    }
    let mut forms = forms;
    forms.push(value.clone());
    // Longest first, so a redaction never leaves the tail of a longer form behind.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    grant.credentials = Some(Credentials {
        header,
        value,
        forms,
        source,
    });
    Some(grant)
}

/// Most bytes of a `ca:` bundle.
pub const MAX_CA_BUNDLE: u64 = 1024 * 1024;

/// The certificates of the PEM bundle at `file` (relative to `dir`).
fn ca_bundle(
    file: &str,
    origin: &str,
    grant: &NetGrant,
    at: &str,
    spans: &Spans,
    dir: &Path,
    diags: &mut Diagnostics,
) -> Option<CaBundle> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = super::load::absolute(dir, Path::new(file));
    let mut problem = |m: String| {
        diags.error(
            Some(spans.value(at)),
            format!("the ca of the net grant {origin}: {m}"),
        );
    };
    if grant.scheme != "https" {
        problem("a CA bundle is for https origins".into());
        return None;
    }
    let bytes = match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_CA_BUNDLE => {
            problem(format!(
                "{} is larger than {MAX_CA_BUNDLE} bytes",
                path.display()
            ));
            return None;
        }
        Ok(_) => std::fs::read(&path),
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            problem(format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let certificates: Result<Vec<Vec<u8>>, _> = CertificateDer::pem_slice_iter(&bytes)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect();
    match certificates {
        Ok(c) if !c.is_empty() => Some(CaBundle {
            path,
            certificates: c,
        }),
        Ok(_) => {
            problem(format!("{} holds no PEM certificate", path.display()));
            None
        }
        Err(e) => {
            problem(format!(
                "{} is not a PEM certificate bundle: {e:?}",
                path.display()
            ));
            None
        }
    }
}
