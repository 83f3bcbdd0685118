-- Fingerprints of the secrets that what is stored here depends on, so that a server
-- configured with another one refuses to start instead of quietly refusing every password
-- (and, worse, wrapping old hashes under the wrong key). A fingerprint is an HMAC of a
-- fixed label under the secret: it identifies the secret without revealing anything of it.
-- The first server to start with the table empty records its own.
CREATE TABLE key_fingerprints (
    name        text        NOT NULL,
    fingerprint bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT key_fingerprints_pkey PRIMARY KEY (name)
);
