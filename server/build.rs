//! Embeds the numbered migrations of `../sql` into the binary, so the list can never drift
//! from the folder: adding `sql/0003_x.sql` is all it takes for the server to apply it.
//!
//! Converts `../openapi.yaml` to JSON once, here, so that the server serves
//! `/openapi.json` without a YAML parser at run time.
//!
//! Also passes the versions of the vendored documentation bundles (`assets/*/VERSION`,
//! written by `assets/fetch.sh`) to the code, which puts them in the assets' URLs: a new
//! version is a new URL, so browsers may cache each one forever.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    for (package, var) in [
        ("swagger-ui", "SWAGGER_UI_VERSION"),
        ("redoc", "REDOC_VERSION"),
    ] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(package)
            .join("VERSION");
        println!("cargo:rerun-if-changed={}", file.display());
        let version = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (run server/assets/fetch.sh)", file.display()));
        let version = version.trim();
        assert!(
            !version.is_empty()
                && version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b)),
            "{}: not a version: {version:?}",
            file.display()
        );
        println!("cargo:rustc-env={var}={version}");
    }

    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    println!("cargo:rerun-if-changed={}", spec.display());
    let yaml = std::fs::read_to_string(&spec).expect("openapi.yaml at the repository root");
    let value: serde_json::Value =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("openapi.yaml: {e}"));
    let json_out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("openapi.json");
    std::fs::write(json_out, serde_json::to_vec(&value).unwrap()).unwrap();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("sql/ directory next to server/")
        .map(|e| e.expect("readable sql/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();

    let mut out = String::from("pub const MIGRATIONS: &[Migration] = &[\n");
    let mut last = 0;
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_str().expect("UTF-8 file name");
        let (number, name) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("{stem}.sql: expected NNNN_name.sql"));
        let version: i64 = number
            .parse()
            .unwrap_or_else(|_| panic!("{stem}.sql: expected NNNN_name.sql"));
        assert!(
            version > last,
            "{stem}.sql: versions must increase without repeats"
        );
        last = version;
        let abs = path.canonicalize().unwrap();
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({:?}) }},",
            abs.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
