# bench/lib/smtp.sh — the local SMTP server that bench/email and bench/faults deliver to.
# Sourced, not run; expects ROOT (the repository) to be set.
#
# It is the test harness's server, tests/mail/smtp_server.py (aiosmtpd): a real SMTP peer
# on 127.0.0.1 that stores every message it accepts in a Maildir (DIR/new) and its
# envelope in DIR/envelopes. Using the tests' server rather than a second one means the
# benchmarks and the tests agree on what "delivered" is.
#
#   smtp_start DIR [PORT]   start it (PORT 0 or unset: any free port); sets SMTP_PID and
#                           SMTP_PORT, and returns once it accepts connections
#   smtp_stop               SIGTERM, then wait for it (bounded); clears SMTP_PID
#   smtp_message_ids DIR    the outbox id of every stored message, one per line, one line
#                           per copy received (so a duplicate shows as a repeated line)

SMTP_PID=""
SMTP_PORT=""

# The virtualenv of tests/smtp/venv.rs, found and made the same way: under the target
# directory, holding exactly tests/mail/requirements.txt, installed under flock(1) (a test
# run may be installing it at the same moment) with the stamp written last, so an
# interrupted install is redone rather than trusted. The first run needs PyPI.
smtp_python() {
  local venv="${CARGO_TARGET_DIR:-$ROOT/target}/test-tools/smtp-venv"
  local requirements="$ROOT/tests/mail/requirements.txt"
  if ! cmp -s "$requirements" "$venv/requirements.installed"; then
    echo "installing the SMTP server's virtualenv (tests/mail/requirements.txt) into $venv" >&2
    mkdir -p "$(dirname "$venv")"
    flock "$(dirname "$venv")/smtp-venv.lock" sh -c '
      set -e
      venv="$1"; requirements="$2"
      if cmp -s "$requirements" "$venv/requirements.installed"; then exit 0; fi
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
      cp "$requirements" "$venv/requirements.installed"' sh "$venv" "$requirements" >&2
  fi
  echo "$venv/bin/python"
}

smtp_start() { # DIR [PORT]
  local dir=$1 port=${2:-0} python before _
  python=$(smtp_python)
  mkdir -p "$dir"
  # The log is appended to across restarts: only a `listening on` line after `before` is
  # this start's.
  touch "$dir.log"
  before=$(grep -c '^listening on ' "$dir.log" || true)
  "$python" "$ROOT/tests/mail/smtp_server.py" --port "$port" --dir "$dir" >>"$dir.log" 2>&1 &
  SMTP_PID=$!
  # A restart on the same port may first wait for the old socket to go (up to 10 s, inside
  # the server), hence 15 s here.
  for _ in $(seq 150); do
    if (($(grep -c '^listening on ' "$dir.log" || true) > before)); then
      SMTP_PORT=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$dir.log" | tail -n 1)
      return 0
    fi
    kill -0 "$SMTP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the SMTP server did not start; its log ends:" >&2
  tail -n 20 "$dir.log" >&2
  return 1
}

smtp_stop() {
  [[ -n $SMTP_PID ]] || return 0
  kill -TERM "$SMTP_PID" 2>/dev/null || true
  # It exits on SIGTERM at once (sessions still open are cancelled); KILL only if it hangs.
  timeout 10 tail -s 0.1 --pid="$SMTP_PID" -f /dev/null 2>/dev/null || kill -KILL "$SMTP_PID" 2>/dev/null || true
  wait "$SMTP_PID" 2>/dev/null || true
  SMTP_PID=""
}

# The server's Message-ID is <outbox id@domain> (server/src/mail/sender.rs), so the part
# before the @ names the outbox row. Only the header block is read: a body line that looks
# like a header must not count.
smtp_message_ids() { # DIR
  find "$1/new" -type f -print0 | xargs -0 -r awk '
    FNR == 1 { head = 1 }
    head && /^\r?$/ { head = 0 }
    head && tolower($0) ~ /^message-id:/ { sub(/^[^<]*</, ""); sub(/@.*$/, ""); print }'
}
