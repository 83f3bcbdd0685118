//! The OpenAPI contract, embedded in the binary and served at `/openapi.yaml` and
//! `/openapi.json`. The JSON form is converted from the YAML at build time (`build.rs`), so
//! the server carries no YAML parser and serving it costs nothing.

use bytes::Bytes;

/// `openapi.yaml` from the repository root: the single source of truth.
pub const YAML: &str = include_str!("../../openapi.yaml");

/// The same document as JSON, made by `build.rs` from [`YAML`].
pub const JSON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// The contract as JSON bytes.
pub fn json() -> Bytes {
    Bytes::from_static(JSON)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_spec_is_openapi_3_0_and_its_json_is_the_yaml() {
        let json: serde_json::Value = serde_json::from_slice(super::JSON).unwrap();
        assert_eq!(json["openapi"], "3.0.3");
        let yaml: serde_json::Value = serde_yaml::from_str(super::YAML).unwrap();
        assert_eq!(json, yaml);
    }
}
