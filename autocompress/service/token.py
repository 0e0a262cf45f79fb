"""The service's bearer token: how strong it must be, and the file a generated one goes to."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from autocompress.errors import UserInputError

MIN_TOKEN_LENGTH = 32  # `openssl rand -hex 24` gives 48 characters, secrets.token_urlsafe(24) 32


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str | None, host: str) -> None:
    """Off loopback a token is required, and a guessable one is refused."""
    if is_loopback(host):
        return
    if not token:
        raise UserInputError(f"--host {host} is reachable from other machines: give --token (or set "
                             "AUTOCOMPRESS_TOKEN) so that only clients with the token are served")
    if len(token) < MIN_TOKEN_LENGTH or len(set(token)) < 8:
        raise UserInputError(f"--host {host} is reachable from other machines, and the token is too weak to guard it "
                             f"(at least {MIN_TOKEN_LENGTH} characters of a random string); make one with "
                             "`openssl rand -hex 24`")


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, readable by this user alone.

    A new file is created exclusively with mode 600. An existing one is replaced only if
    it is a regular file of this user with mode 600; a symbolic link, another owner or
    a wider mode means someone else had a hand in it, so the service refuses to start.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        problem = None
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symbolic link"
        elif not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = "belongs to another user"
        elif stat.S_IMODE(info.st_mode) & 0o077:
            problem = f"has mode {stat.S_IMODE(info.st_mode):o}, readable by others"
        if problem:
            raise UserInputError(f"{path} {problem}; remove it (the service writes a new token there, mode 600) "
                                 "or give --token")
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)  # a leftover (or a planted link) goes; O_EXCL then makes a fresh file
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)  # replaces the name itself, never a file a link would point to
