"""The test harness's SMTP server (driven by tests/smtp.rs): a real SMTP peer for the
server's mail client, that keeps every message it accepts for the tests to read.

It speaks plain SMTP on 127.0.0.1 (no TLS; AUTH PLAIN and LOGIN are offered and accept
any credentials, so that a test can see what the client sent). Each accepted message is
stored byte for byte in the Maildir PATH -- no header is added, so a test sees exactly
what the client sent -- and its envelope (MAIL FROM, RCPT TO, AUTH, arrival number) in
PATH/envelopes/<message key>.json. The sidecar is written after the message and both
appear by rename, so a reader that starts from the sidecars never sees half of either.

Recipients steer failures: a local part starting with `tempfail` gets a 451 at RCPT,
one starting with `reject` a 550; every other recipient is accepted.

Usage: smtp_server.py --port N (0: any free port) --dir PATH. Prints `listening on PORT`
once it accepts connections; exits with status 0 on SIGTERM.
"""

import argparse
import asyncio
import errno
import json
import mailbox
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult

# A restart binds the port its predecessor just released; the listener sets SO_REUSEADDR,
# so only a predecessor that has not quite gone yet is waited for, this long.
BIND_PATIENCE_SECONDS = 10


class Store:
    """The Maildir and its envelope sidecars."""

    def __init__(self, path):
        # Maildir(create=True) makes nothing in a directory that already exists (the
        # harness makes it empty beforehand), so the layout is made here.
        for sub in ("tmp", "new", "cur", "envelopes"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        self.maildir = mailbox.Maildir(path, factory=None, create=False)
        self.envelopes = os.path.join(path, "envelopes")
        # Arrival numbers continue across a restart on the same directory.
        self.next_seq = 1 + max(
            (self._seq(name) for name in os.listdir(self.envelopes) if name.endswith(".json")),
            default=0,
        )

    def _seq(self, name):
        with open(os.path.join(self.envelopes, name), encoding="utf-8") as f:
            return json.load(f)["seq"]

    def add(self, envelope, auth):
        # Everything here is synchronous: within the one event loop, two messages cannot
        # interleave and take the same arrival number.
        key = self.maildir.add(envelope.original_content)
        sidecar = {
            "seq": self.next_seq,
            "path": os.path.join("new", key),
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_tos,
            "auth": auth,
        }
        self.next_seq += 1
        final = os.path.join(self.envelopes, key + ".json")
        temporary = os.path.join(self.envelopes, "." + key + ".json.tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(sidecar, f)
        os.replace(temporary, final)


class Handler:
    def __init__(self, store):
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local_part = address.rsplit("@", 1)[0].lower()
        if local_part.startswith("tempfail"):
            return "451 4.3.0 try again later"
        if local_part.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.store.add(envelope, session.auth_data if session.authenticated else None)
        return "250 OK"


def accept_any_credentials(server, session, envelope, mechanism, auth_data):
    # auth_data is a LoginPassword for PLAIN and LOGIN; kept for the envelope sidecar.
    return AuthResult(
        success=True,
        auth_data={
            "mechanism": mechanism,
            "login": auth_data.login.decode("utf-8", "replace"),
            "password": auth_data.password.decode("utf-8", "replace"),
        },
    )


async def serve(port, path):
    loop = asyncio.get_running_loop()
    store = Store(path)
    handler = Handler(store)

    def session():
        return SMTP(
            handler,
            # A fixed name: the default asks the resolver for this host's FQDN, which can
            # take seconds on a machine without DNS.
            hostname="smtp.test",
            auth_require_tls=False,
            authenticator=accept_any_credentials,
            enable_SMTPUTF8=True,
        )

    deadline = time.monotonic() + BIND_PATIENCE_SECONDS
    while True:
        try:
            server = await loop.create_server(session, "127.0.0.1", port, reuse_address=True)
            break
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)

    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await stopped.wait()
    # Closing the listener refuses new connections at once; sessions still open are
    # cancelled when the loop ends (a client stuck mid-dialogue must not hold up a stop).
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
