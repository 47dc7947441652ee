//! Code generated from proto/tiernet/v1/control.proto (see build.rs).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tiernet.v1");
}

/// For gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tiernet_descriptor");

use crate::compile::GatewayState;
use sha2::{Digest, Sha256};

/// The wire form of a gateway state: its JSON, and the SHA-256 of exactly those bytes.
pub fn encode_state(state: &GatewayState) -> (String, String) {
    // Serialising a plain struct of Vecs and Strings cannot fail.
    let json = serde_json::to_string(state).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(json.as_bytes()));
    (json, digest)
}

pub fn state_digest(state: &GatewayState) -> String {
    encode_state(state).1
}

/// Decodes a received state and checks it against its digest.
pub fn decode_state(json: &str, digest: &str) -> Result<GatewayState, String> {
    let actual = hex::encode(Sha256::digest(json.as_bytes()));
    if actual != digest {
        return Err(format!(
            "state digest mismatch (got {actual}, announced {digest})"
        ));
    }
    serde_json::from_str(json).map_err(|e| format!("state does not decode: {e}"))
}
