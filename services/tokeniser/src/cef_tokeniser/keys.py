"""Master and data keys of the tokeniser."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_dev_master_key(path: Path) -> bool:
    """Creates a random 256-bit development master key at `path` (0600); True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True
