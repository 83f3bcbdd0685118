//! One list of configuration variables, everywhere: the list in the code
//! (`config::VARIABLES`, which every read is checked against), what the code actually reads,
//! what `check-config` prints, what `.env.example` shows, and the table of
//! `docs/configuration.md` — the same variables, in the same order.

use std::cell::RefCell;

use jobpath_server::config::{Config, VARIABLES};

use super::{output, repo_root};

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn is_variable(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `NAME` of every `NAME=value` or `# NAME=value` line.
fn env_example() -> Vec<String> {
    read(".env.example")
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| is_variable(name))
        .map(str::to_owned)
        .collect()
}

/// The first column of the table under `| variable | default | meaning |`.
fn docs_table() -> Vec<String> {
    read("docs/configuration.md")
        .lines()
        .skip_while(|line| !line.starts_with("| variable |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cell = row.split('|').nth(1).unwrap().trim();
            let name = cell.trim_matches('`');
            assert!(is_variable(name), "not a variable in the table: {row}");
            name.to_owned()
        })
        .collect()
}

#[test]
fn the_variables_are_the_same_in_the_code_check_config_env_example_and_the_docs() {
    let listed: Vec<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), listed.len(), "a variable listed twice");

    // Every listed variable is read. (Reading an unlisted one panics in `config::read`.)
    let seen = RefCell::new(Vec::new());
    Config::from_lookup(|key| {
        seen.borrow_mut().push(key.to_owned());
        None
    })
    .unwrap();
    let mut seen = seen.into_inner();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, unique, "read by the code vs config::VARIABLES");

    let (code, stdout, stderr) = output(&["check-config"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let printed: Vec<String> = stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    assert_eq!(printed, listed, "check-config vs config::VARIABLES");
    assert_eq!(env_example(), listed, ".env.example vs config::VARIABLES");
    assert_eq!(
        docs_table(),
        listed,
        "docs/configuration.md vs config::VARIABLES"
    );
}
