//! Generates the client from `../openapi.yaml` at build time, so it can never drift from the
//! contract: change the spec and the next build has the new types and methods.

use std::path::Path;

fn main() {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let text = std::fs::read_to_string(&spec_path).expect("reading ../openapi.yaml");
    let spec: openapiv3::OpenAPI =
        serde_yaml::from_str(&text).expect("openapi.yaml is not a valid OpenAPI 3.0 document");

    let mut settings = progenitor::GenerationSettings::default();
    settings.with_interface(progenitor::InterfaceStyle::Builder);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .expect("progenitor could not generate a client from openapi.yaml");
    let ast = syn::parse2(tokens).expect("generated code parses");
    let code = prettyplease::unparse(&ast);
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("codegen.rs");
    std::fs::write(out, code).expect("writing the generated client");
}
