"""Authentication codes of cache entries: a cached answer is believed only if this user (or a runner sharing the
secret) wrote it.

Threat: the cache folder is writable by more than the user who reads it (a CI cache restored from another branch,
a shared folder, a mistaken copy), so anyone able to edit a file there could make icr print their numbers. Every
entry therefore carries HMAC-SHA256(secret, kind | key | content) made with a per-user secret kept OUTSIDE the
cache folder: $ICR_CACHE_SECRET if set (CI runners that share one), else the file `cache-secret` in the user's
config folder (e.g. ~/.config/icr), created on first use with mode 0600. An entry whose code does not verify is
refused, removed and recomputed; it cannot be forged without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import platformdirs

from icrcli.errors import UserError

SECRET_ENV = "ICR_CACHE_SECRET"
SECRET_NAME = "cache-secret"
_SECRET_BYTES = 32

def secret_path() -> Path:
    """The secret's file: <user config dir>/cache-secret (platformdirs; XDG_CONFIG_HOME on Linux)."""
    return Path(platformdirs.user_config_dir("icr", appauthor=False)) / SECRET_NAME


def secret() -> bytes:
    """$ICR_CACHE_SECRET (its UTF-8 bytes), else the secret file's bytes, created on first use (mode 0600)."""
    env = os.environ.get(SECRET_ENV, "")
    if env:
        if len(env) < 16:
            raise UserError(f"${SECRET_ENV} is {len(env)} characters long; a secret that short can be guessed. Use "
                            "at least 16 random characters (e.g. the output of `openssl rand -hex 32`).")
        return env.encode("utf-8")
    return _read_or_create(secret_path())     # read each time (a few bytes): a chmod or a new secret counts at once


def _read_or_create(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            return _read(path)
        try:
            os.write(fd, secrets.token_hex(_SECRET_BYTES).encode())
        finally:
            os.close(fd)
        return _read(path)
    except OSError as e:
        raise UserError(f"cannot read or create the cache secret {path} ({e.strerror or e}). Make its folder "
                        f"writable, or set ${SECRET_ENV} to a secret of your own (at least 16 characters).") from None


def _read(path: Path) -> bytes:
    st = os.stat(path, follow_symlinks=False)
    if os.name == "posix" and st.st_mode & 0o077:
        raise UserError(f"the cache secret {path} can be read by others (mode {st.st_mode & 0o777:o}); anyone who "
                        f"reads it can forge cache entries. Run `chmod 600 {path}` (or remove it: a new one is made, "
                        "and the entries made with the old one are recomputed).")
    value = path.read_bytes().strip()
    if len(value) < 16:
        raise UserError(f"the cache secret {path} holds {len(value)} bytes; remove it and icr makes a new one.")
    return value


def mac(kind: str, key: str, content: bytes) -> str:
    """HMAC-SHA256 hex of an entry: its kind, its key and its content (bytes, or a content hash)."""
    h = hmac.new(secret(), digestmod=hashlib.sha256)
    for part in (kind.encode(), key.encode(), content):
        h.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two (kind, key, content) give one message
        h.update(part)
    return h.hexdigest()


def verify(kind: str, key: str, content: bytes, code: object) -> bool:
    return isinstance(code, str) and hmac.compare_digest(mac(kind, key, content), code)
