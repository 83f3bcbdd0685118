"""Verifies a JobPath access token the way a Python service would: with the JWKS alone.

Usage: verify.py JWKS_URL TOKEN. Prints "ok SUB" and exits 0 when the token verifies,
prints "refused REASON" and exits 1 otherwise. The algorithm comes from the key the
token's kid names, never from the token.
"""

import sys

import jwt

jwks_url, token = sys.argv[1], sys.argv[2]
keys = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False)
try:
    key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        issuer="jobpath-api",
        audience="jobpath",
        options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud"]},
    )
except jwt.exceptions.PyJWTError as e:
    print("refused", type(e).__name__)
    sys.exit(1)
print("ok", claims["sub"])
