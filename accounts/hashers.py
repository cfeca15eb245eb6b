"""The password hasher for generated secrets (provisioned accounts), and only for them.

A password hash is made slow so that guessing a human-chosen password from a stolen hash costs
too much. A provisioned password is not chosen by anyone: it is `secrets.token_urlsafe(24)`,
192 random bits, and no amount of hashing speed brings a search of 2**192 (or 2**128) candidates
within reach. So a slow hash would protect nothing here, while costing up to a CPU-second per
account at Django's default PBKDF2 cost (0.9 s measured on the project's shared machine; 1,000
at one iteration took 0.1 s): a quarter of an hour of CPU for one call provisioning 1,000
devices, and the same again on each device's every login.

This is Django's own PBKDF2-SHA256 code (salted, constant-time verification) at one iteration,
under its own algorithm name so that nothing else can end up with it: `set_password` and
signups always use the default hasher, and a provisioned account that sets a password of its
own gets the full-cost hash.
"""

from __future__ import annotations

import secrets

from django.contrib.auth.hashers import PBKDF2PasswordHasher

GENERATED_SECRET_BYTES = 24  # 192 bits; anything >= 16 (128 bits) makes the reasoning above hold


class GeneratedSecretHasher(PBKDF2PasswordHasher):
    algorithm = "generated_pbkdf2_sha256"
    iterations = 1


def generated_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def generated_secret_hash(secret: str) -> str:
    hasher = GeneratedSecretHasher()
    return str(hasher.encode(secret, hasher.salt()))


def is_generated_secret_hash(encoded: str) -> bool:
    return encoded.startswith(f"{GeneratedSecretHasher.algorithm}$")
