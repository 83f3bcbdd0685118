"""Schemathesis hooks for the JobPath API contract run (loaded via SCHEMATHESIS_HOOKS).

Authentication is dynamic: every test case of a bearer-protected operation signs up a
throwaway account and logs in for a fresh token, so a `logout` case revoking its token can
never poison the cases that follow. A stateful step that follows a login link keeps the
token that login returned. Operations without security get no token, and schemathesis's
own `ignored_auth` check still sends requests without one or with a broken one.

Operations that require a role (`x-required-role: admin`) get a token of the admin account
the test made with `jobpath-server admin grant` (JOBPATH_ADMIN_EMAIL/PASSWORD), logged in
afresh for each case, so the admin API is tested past its 403.

The step-up (`verify_mfa`) gets a fresh password login of the account with two-factor
authentication the test enrolled (JOBPATH_MFA_EMAIL/PASSWORD/SECRET): a session at aal1
that owes its second factor, so the operation is tested past its 409 (no factor). Half of
its well-formed code cases carry the code the account's app would show now (computed here,
RFC 6238), so the step-up itself succeeds too; the rest are wrong or replayed codes, and
the account's lock after ten of them (429) is part of the contract.

An operation that takes only an API key (`security: [{apiKeyAuth: []}]`, introspection) gets
a fresh key with every scope, of a fresh account, for each case. Half of its well-formed
`token` values are replaced by a real, live access token, so introspection answers
`active: true` as well as `active: false`; half of the well-formed `create_api_key`
passwords are the account's, so the password path makes keys too.
"""

import base64
import hashlib
import hmac
import os
import time
import uuid

import requests
import schemathesis
import yaml

BASE_URL = os.environ["JOBPATH_BASE_URL"]


def protected_operations(spec_path):
    """`METHOD /path` of every operation that requires a security scheme. One that also
    accepts no credentials (`security: [{}, ...]`) is left without a token here, so its
    anonymous form is what most cases test; the stateful phase reaches its bearer form
    through the login link that carries the token."""
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        and operation.get("security")
        and {} not in operation["security"]
    }


def api_key_operations(spec_path):
    """`METHOD /path` of every operation that takes only an API key."""
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        and operation.get("security")
        and all(set(r) == {"apiKeyAuth"} for r in operation["security"])
    }


def admin_operations(spec_path):
    """`METHOD /path` of every operation that requires the admin role."""
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("x-required-role") == "admin"
    }


PROTECTED = protected_operations(os.environ["JOBPATH_SPEC"])
ADMIN_ONLY = admin_operations(os.environ["JOBPATH_SPEC"])
API_KEY_ONLY = api_key_operations(os.environ["JOBPATH_SPEC"])
INTROSPECT = "POST /auth/introspect"
CREATE_API_KEY = "POST /auth/api-keys"
ADMIN = {"email": os.environ["JOBPATH_ADMIN_EMAIL"], "password": os.environ["JOBPATH_ADMIN_PASSWORD"]}
PASSWORD = "contract run passphrase"
MFA = {"email": os.environ["JOBPATH_MFA_EMAIL"], "password": os.environ["JOBPATH_MFA_PASSWORD"]}
MFA_SECRET = os.environ["JOBPATH_MFA_SECRET"]
STEP_UP = "POST /auth/mfa/verify"


def totp_now(secret):
    """The 6-digit code of a base32 secret for the current 30 s step (RFC 6238, SHA-1)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int(time.time()) // 30
    digest = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


# The bearer token each factor was enrolled with (factor id -> `Authorization` value), so a
# stateful step that follows an enrolment's link to confirm or remove the factor acts as the
# account that owns it, not as a stranger (who is rightly told 404).
FACTOR_OWNERS = {}
# The same for API keys (key id -> the `Authorization` that made it), so that a stateful
# step following a creation's link revokes the key as its owner.
KEY_OWNERS = {}


def mfa_pending_token():
    """A fresh password login of the account with 2FA: a session owing its second factor.
    Other cases of the run can reach that account too (an admin operation following an
    inferred link to its id may reset its factors, deactivate or delete it): then the login
    owes nothing and `verify_mfa` answers its documented 409, or, when the account can no
    longer log in, a fresh account stands in. Either way the case stays a valid one."""
    login = requests.post(f"{BASE_URL}/auth/login", json=MFA, timeout=10)
    if login.status_code != 200:
        return fresh_token()
    return login.json()["access_token"]


def fresh_token():
    credentials = {"email": f"contract-{uuid.uuid4().hex}@example.com", "password": PASSWORD}
    signup = requests.post(f"{BASE_URL}/auth/signup", json=credentials, timeout=10)
    signup.raise_for_status()
    login = requests.post(f"{BASE_URL}/auth/login", json=credentials, timeout=10)
    login.raise_for_status()
    return login.json()["access_token"]


def fresh_api_key():
    """A key with every scope, of a fresh account, made by its fresh (recent) login."""
    token = fresh_token()
    made = requests.post(
        f"{BASE_URL}/auth/api-keys",
        json={"name": "contract", "scopes": ["account:read", "introspect"], "expires_in_days": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    made.raise_for_status()
    return made.json()["key"]


def admin_token():
    login = requests.post(f"{BASE_URL}/auth/login", json=ADMIN, timeout=10)
    login.raise_for_status()
    return login.json()["access_token"]


def is_live(authorization):
    try:
        me = requests.get(f"{BASE_URL}/auth/me", headers={"Authorization": authorization}, timeout=10)
    except (requests.RequestException, ValueError):
        return False
    return me.status_code == 200


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    def get(self, case, context):
        if case.operation.label not in PROTECTED:
            return None
        if case.operation.label in ADMIN_ONLY:
            return admin_token()
        if case.operation.label in API_KEY_ONLY:
            return fresh_api_key()
        if case.operation.label == STEP_UP:
            return mfa_pending_token()
        # A step that follows a login link carries that login's real token; other phases
        # pre-fill a random one from the security scheme. Only a token the server accepts
        # is kept.
        present = (case.headers or {}).get("Authorization", "")
        if present.startswith("Bearer ") and is_live(present):
            return present.removeprefix("Bearer ")
        return fresh_token()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(context, case, **kwargs):
    """A call about a factor the run enrolled is made by the account that enrolled it (a
    stateful step's path parameter comes from the enrolment's link only after the auth hook
    ran). Only a live token is replaced: a case sent without credentials, or with broken
    ones (schemathesis's `ignored_auth` check), is left as it is."""
    params = case.path_parameters or {}
    owner = FACTOR_OWNERS.get(str(params.get("factor_id"))) or KEY_OWNERS.get(str(params.get("key_id")))
    present = (case.headers or {}).get("Authorization", "")
    if owner is not None and present != owner and present.startswith("Bearer ") and is_live(present):
        case.headers["Authorization"] = owner


@schemathesis.hook
def after_call(context, case, response):
    """Remembers who enrolled each factor and made each key (see FACTOR_OWNERS)."""
    if response.status_code != 201:
        return
    authorization = (case.headers or {}).get("Authorization")
    if not authorization:
        return
    if case.operation.label == "POST /auth/mfa/totp":
        FACTOR_OWNERS[response.json()["factor_id"]] = authorization
    elif case.operation.label == CREATE_API_KEY:
        KEY_OWNERS[response.json()["id"]] = authorization


def _contains_local_part(email, password):
    """The password policy's email rule, as the server applies it (docs/security.md)."""
    local = email.strip().lower().split("@")[0]
    return len(local) >= 3 and local in password.lower()


@schemathesis.hook
def filter_body(context, body):
    """Signup refuses a password that contains the email's local part (422 weak_password).
    JSON Schema cannot state a rule across two fields, so a generated signup that breaks it
    is not valid data, though the schema alone would call it so: leave it out rather than
    count its documented refusal as a departure. Every other body is kept."""
    operation = context.operation
    if operation is None or not isinstance(body, dict):
        return True
    # The same rule holds for a reset by code, whose new password is checked against the
    # address given with it (a reset by token ignores the address).
    fields = {
        "POST /auth/signup": ("email", "password"),
        "POST /auth/password/reset": ("email", "new_password"),
    }.get(operation.label)
    if fields is None or (operation.label != "POST /auth/signup" and "token" in body):
        return True
    email, password = body.get(fields[0]), body.get(fields[1])
    if not isinstance(email, str) or not isinstance(password, str):
        return True
    return not _contains_local_part(email, password)



@schemathesis.hook
def map_body(context, body):
    """A generated password for `delete_me` is almost never the account's, so every case
    would be the documented 401: give half of the well-formed ones the password of the
    fresh account the auth hook logs in (a stateful step's account has another one, and
    gets the 401), so the deletion itself is exercised too. A string of 1 to 256
    characters stays one: a case's validity is unchanged."""
    operation = context.operation
    if operation is None or not isinstance(body, dict):
        return body
    if operation.label != "POST /auth/me/delete":
        return _real_secrets(operation, body)
    password = body.get("password")
    if isinstance(password, str) and 1 <= len(password) <= 256 and len(password) % 2 == 0:
        return {**body, "password": PASSWORD}
    return body


def _real_secrets(operation, body):
    """The step-up's code, and the enrolment's password, as a real client sends them, for
    half of the well-formed cases (a 6-digit code stays one; a 1 to 256 character password
    stays one): so `verify_mfa` and `enrol_totp` succeed too, not only refuse."""
    if operation.label == STEP_UP:
        code = body.get("code")
        if isinstance(code, str) and len(code) == 6 and code.isdigit() and int(code) % 2 == 0:
            return {**body, "code": totp_now(MFA_SECRET)}
    if operation.label == INTROSPECT:
        token = body.get("token")
        if isinstance(token, str) and 1 <= len(token) <= 4096 and len(token) % 2 == 0:
            return {**body, "token": fresh_token()}
    if operation.label in ("POST /auth/mfa/totp", CREATE_API_KEY):
        password = body.get("password")
        if isinstance(password, str) and 1 <= len(password) <= 256 and len(password) % 2 == 0:
            return {**body, "password": PASSWORD}
    return body
