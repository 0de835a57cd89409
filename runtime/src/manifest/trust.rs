//! The keys of `trust:`, as the operator writes them: minisign public keys, a whole
//! `.pub` file or just its base64 line. Verifying signatures with them is
//! [`crate::distribution::bundle`]'s.

/// Parse a minisign public key — a whole `.pub` file or just its base64 line — into its
/// key id and base64 text.
pub fn parse_public_key(text: &str) -> Result<(String, String), String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or_default();
    let pk = minisign::PublicKey::from_base64(line)
        .map_err(|e| format!("not a minisign public key ({e})"))?;
    Ok((key_id(pk.keynum()), line.to_owned()))
}

/// A minisign key id as minisign prints it (hex of the key number, big-endian).
pub fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}
