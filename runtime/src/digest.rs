//! sha256 digests of bytes, as lowercase hex: the one place that spells it (components,
//! bundles, stored history content, lock keys).

use sha2::{Digest, Sha256};

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
