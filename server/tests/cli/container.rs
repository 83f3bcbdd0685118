//! Static checks of the container files. No Docker engine runs where the tests run, so the
//! image is never built here; what can rot silently is checked instead: the Dockerfile builds
//! with the script CI runs, copies the binary from where that script puts it, runs as a
//! non-root user, checks its health with the binary's own `healthcheck` command, and
//! compose.yaml wires the server to PostgreSQL with the secret required from outside.

use std::collections::HashMap;
use std::time::Duration;

use jobpath_server::cli::{self, Command};

use super::repo_root;

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The Dockerfile's instructions as (KEYWORD, arguments), continuations joined, comments
/// and blank lines dropped.
fn instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|line| {
            let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            (keyword.to_uppercase(), args.trim().to_owned())
        })
        .collect()
}

/// Splits the instructions at each `FROM`: (FROM arguments, that stage's instructions).
fn stages() -> Vec<(String, Vec<(String, String)>)> {
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (keyword, args) in instructions() {
        match (keyword.as_str(), stages.last_mut()) {
            ("FROM", _) => stages.push((args, Vec::new())),
            (_, Some((_, body))) => body.push((keyword, args)),
            // ARG before the first FROM: the build arguments.
            (_, None) => {}
        }
    }
    stages
}

fn one<'a>(stage: &'a [(String, String)], keyword: &str) -> &'a str {
    let found: Vec<&str> = stage
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {keyword} in the stage: {found:?}"
    );
    found[0]
}

/// `["a", "b"]` (exec form) as a list of strings.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

#[test]
fn the_dockerfile_builds_with_the_ci_script_and_copies_the_binary_it_makes() {
    let stages = stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build_from, build) = &stages[0];
    let (runtime_from, runtime) = &stages[1];

    // Built in the official Rust image, on a toolchain at least the workspace's rust-version.
    let rust_floor = workspace_rust_version();
    let args: HashMap<String, String> = instructions()
        .iter()
        .take_while(|(k, _)| k != "FROM")
        .filter(|(k, _)| k == "ARG")
        .filter_map(|(_, a)| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let rust_version = &args["RUST_VERSION"];
    assert!(
        version_at_least(rust_version, &rust_floor),
        "image Rust {rust_version} older than rust-version {rust_floor}"
    );
    assert_eq!(
        build_from, "rust:${RUST_VERSION}-slim-bookworm AS build",
        "the official Rust image, named as the build stage"
    );
    assert!(
        runtime_from.starts_with("debian:bookworm-slim"),
        "a slim runtime of the same Debian release as the build: {runtime_from}"
    );

    // The build is the script CI runs, and the script is the release build.
    let workdir = one(build, "WORKDIR");
    assert_eq!(one(build, "RUN"), "scripts/build-release.sh");
    let script = read("scripts/build-release.sh");
    assert!(
        script
            .lines()
            .any(|l| l.trim() == "cargo build --release --locked -p jobpath-server"),
        "{script}"
    );
    assert!(
        script.contains(r#"bin="${CARGO_TARGET_DIR:-target}/release/jobpath-server""#),
        "{script}"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.contains("scripts/build-release.sh")),
        ".ci/run runs the image's build script"
    );

    // The runtime copies exactly that binary (no CARGO_TARGET_DIR in the image).
    let copy = one(runtime, "COPY");
    assert_eq!(
        copy,
        format!(
            "--from=build {workdir}/target/release/jobpath-server /usr/local/bin/jobpath-server"
        )
    );
}

#[test]
fn the_image_runs_as_non_root_and_checks_its_health_with_the_binary() {
    let stages = stages();
    let (_, runtime) = &stages[1];
    let user = one(runtime, "USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "a numeric non-root USER (so runAsNonRoot can check it): {user}"
    );

    let healthcheck = one(runtime, "HEALTHCHECK");
    let (options, command) = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let command = exec_form(command);
    assert_eq!(command[0], "jobpath-server");
    let args = command[1..].iter().cloned();
    assert_eq!(cli::parse(args), Ok(Command::Healthcheck));
    // The container runtime must wait longer than the command does, or a slow answer is
    // reported as a kill rather than as the command's own diagnosis.
    let timeout: u64 = options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("--timeout="))
        .and_then(|t| t.strip_suffix('s'))
        .expect("--timeout=<n>s")
        .parse()
        .unwrap();
    assert!(Duration::from_secs(timeout) > cli::HEALTHCHECK_TIMEOUT);

    assert_eq!(exec_form(one(runtime, "ENTRYPOINT")), ["jobpath-server"]);
    let cmd = exec_form(one(runtime, "CMD"));
    assert_eq!(cli::parse(cmd.into_iter()), Ok(Command::Serve));

    let env = one(runtime, "ENV");
    assert!(env.contains("APP_ENV=production"), "{env}");
    let exposed: Vec<u16> = one(runtime, "EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        env.contains("PORT=8000") && exposed.contains(&8000),
        "{env}"
    );
    let metrics = jobpath_server::config::DEFAULT_METRICS_PORT;
    assert!(
        env.contains(&format!("METRICS_PORT={metrics}")) && exposed.contains(&metrics),
        "{env}"
    );
    // The default, loopback, is the container's own: a published port could not reach it.
    assert!(env.contains("METRICS_HOST=0.0.0.0"), "{env}");
}

#[test]
fn compose_runs_the_image_against_postgresql_with_the_secret_required() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("compose.yaml")).unwrap();
    let api = &compose["services"]["api"];
    let db = &compose["services"]["db"];
    assert_eq!(api["build"], ".", "built from this Dockerfile");
    assert!(
        db["image"].as_str().unwrap().starts_with("postgres:"),
        "{db:?}"
    );
    assert_eq!(api["depends_on"]["db"]["condition"], "service_healthy");
    let env = &api["environment"];
    assert_eq!(env["APP_ENV"], "production");
    let url = env["DATABASE_URL"].as_str().unwrap();
    assert!(
        url.starts_with("postgres://") && url.contains("@db:5432/"),
        "{url}"
    );
    // `${VAR:?message}`: compose refuses to start without it; no default secret exists.
    for secret in ["JWT_SECRET_KEY", "PASSWORD_PEPPER"] {
        assert!(
            env[secret]
                .as_str()
                .unwrap()
                .starts_with(&format!("${{{secret}:?")),
            "{env:?}"
        );
    }
    assert!(
        db["environment"]["POSTGRES_PASSWORD"]
            .as_str()
            .unwrap()
            .starts_with("${POSTGRES_PASSWORD:?")
    );

    let ignored = read(".dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "target/"),
        "the build context leaves out build output"
    );
}

/// `a.b[.c]` ≥ `x.y[.z]`, numerically.
fn version_at_least(have: &str, need: &str) -> bool {
    let parts = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    parts(have) >= parts(need)
}

/// The workspace's `rust-version` (Cargo.toml), the oldest toolchain that builds it.
fn workspace_rust_version() -> String {
    read("Cargo.toml")
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"')
        .to_owned()
}
