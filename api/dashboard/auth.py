"""Admin password: PBKDF2-SHA256 hashes (werkzeug's ``pbkdf2:sha256:N$salt$hex`` format).

Make a hash for ``STREAMREC_ADMIN_PASSWORD_HASH`` with
``python -m api.dashboard.auth 'the password'``.

>>> h = hash_password("s3cret", iterations=1000, salt="abc")
>>> h
'pbkdf2:sha256:1000$abc$...'
>>> verify_password(h, "s3cret"), verify_password(h, "wrong")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys

__all__ = ["hash_password", "verify_password"]

ITERATIONS = 600_000


def _digest(password: str, salt: str, iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: str | None = None) -> str:
    """A salted PBKDF2-SHA256 hash of ``password``."""
    salt = salt or secrets.token_hex(16)
    return f"pbkdf2:sha256:{iterations}${salt}${_digest(password, salt, iterations)}"


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare; False if malformed)."""
    try:
        method, salt, expected = stored.split("$", 2)
        scheme, algorithm, iterations = method.split(":")
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != "pbkdf2" or algorithm != "sha256" or rounds < 1:
        return False
    return hmac.compare_digest(_digest(password, salt, rounds), expected)


if __name__ == "__main__":  # pragma: no cover - operator tool
    if len(sys.argv) != 2:
        sys.exit("usage: python -m api.dashboard.auth PASSWORD")
    print(hash_password(sys.argv[1]))
