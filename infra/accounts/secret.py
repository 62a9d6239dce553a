"""The Flask session secret, made once per deployment in the state folder."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from core.errors import ConfigurationError

__all__ = ["load_or_create_secret"]


def load_or_create_secret(state_dir: Path, name: str = "secret_key") -> str:
    """The secret in ``state_dir/name``, made once (mode 0600): the Flask secret key,
    or the demo's API token (``name="api_token"``).

    Several gunicorn workers starting together all end up with the same key: the
    file is published with an atomic hard link, and the losers read the winner's.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / name
    if not path.exists():
        tmp = state_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigurationError(f"{path} holds no usable secret; delete it to make a new one")
    return secret
