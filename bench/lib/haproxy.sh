# shellcheck shell=bash
# bench/lib/haproxy.sh — the HAProxy configuration of bench/scale and bench/faults: the one
# in scripts/haproxy.cfg.in (which docs/scaling.md shows and tests/haproxy.rs runs), with its
# placeholders filled. Sourced; needs ROOT.

# haproxy_config BIND SERVERS [LOG [LOG_FORMAT]] → the configuration on stdout. SERVERS is
# one `    server NAME HOST:PORT check` line per instance (newline-terminated); LOG and
# LOG_FORMAT are whole lines for the global and defaults sections, or empty.
haproxy_config() {
    HAP_BIND="$1" HAP_SERVERS="$2" HAP_LOG="${3:-}" HAP_LOG_FORMAT="${4:-}" awk '
        $0 == "@SERVERS@" { printf "%s", ENVIRON["HAP_SERVERS"]; next }
        $0 == "@LOG@" { if (ENVIRON["HAP_LOG"] != "") print ENVIRON["HAP_LOG"]; next }
        $0 == "@LOG_FORMAT@" { if (ENVIRON["HAP_LOG_FORMAT"] != "") print ENVIRON["HAP_LOG_FORMAT"]; next }
        { gsub(/@BIND@/, ENVIRON["HAP_BIND"]); print }
    ' "$ROOT/scripts/haproxy.cfg.in"
}
