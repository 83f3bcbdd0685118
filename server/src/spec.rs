//! The OpenAPI contract, embedded in the binary and served at `/openapi.yaml` and
//! `/openapi.json`. The JSON form is converted once, on first request, not at start-up.

use std::sync::OnceLock;

use bytes::Bytes;

/// `openapi.yaml` from the repository root: the single source of truth.
pub const YAML: &str = include_str!("../../openapi.yaml");

/// The contract as JSON bytes.
pub fn json() -> anyhow::Result<Bytes> {
    static JSON: OnceLock<Bytes> = OnceLock::new();
    if let Some(bytes) = JSON.get() {
        return Ok(bytes.clone());
    }
    let value: serde_json::Value = serde_yaml::from_str(YAML)?;
    let bytes = Bytes::from(serde_json::to_vec(&value)?);
    Ok(JSON.get_or_init(|| bytes).clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_spec_is_openapi_3_0_and_converts_to_json() {
        let json: serde_json::Value = serde_json::from_slice(&super::json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.0.3");
    }
}
