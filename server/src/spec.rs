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

    /// `ErrorCode` is what typed clients (the TypeScript client's union) know the codes
    /// from: it must be exactly the codes `ApiError::code` can answer. Read from the source
    /// of that one function, so that a new variant's code cannot be left out of the spec.
    #[test]
    fn the_spec_error_code_enum_is_every_code_the_server_answers() {
        use std::collections::BTreeSet;
        let source = include_str!("errors.rs");
        let body = source
            .split("pub fn code(&self) -> &'static str {")
            .nth(1)
            .and_then(|rest| rest.split("\n    }\n").next())
            .expect("ApiError::code in errors.rs");
        let answered: BTreeSet<&str> = body.split('"').skip(1).step_by(2).collect();
        let json: serde_json::Value = serde_json::from_slice(super::JSON).unwrap();
        let listed: BTreeSet<&str> = json["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("components.schemas.ErrorCode.enum")
            .iter()
            .map(|code| code.as_str().unwrap())
            .collect();
        assert!(answered.len() > 10, "{answered:?}");
        assert_eq!(
            answered, listed,
            "ApiError::code versus the spec's ErrorCode"
        );
    }
}
