"""Downloads into a cache, verified, atomic: a file is there whole or not.

The cache lives in `$KERAS_DEEPLAB_CACHE`, else `$KERAS_HOME/keras_deeplab`
(`~/.keras/keras_deeplab`), beside where Keras keeps its own downloads.
A download streams into a temporary sibling while its SHA-256 is computed,
is checked against the stated length and hash, and only then renamed into
place; anything else leaves nothing behind.
"""

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from keras_deeplab.atomic import atomic_file
from keras_deeplab.errors import UserInputError

CACHE_ENV = "KERAS_DEEPLAB_CACHE"
MIRROR_ENV = "KERAS_DEEPLAB_MIRROR"
DOWNLOADS = "downloads"
_TIMEOUT_S = 60
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{8,64}")
_MIN_HASH_DIGITS = 8


class DownloadError(UserInputError):
    """A file could not be fetched whole and verified; nothing was kept."""


def cache_dir() -> Path:
    """The folder downloads and converted models are kept in."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home).expanduser() / "keras_deeplab"


def check_sha256(sha256) -> str | None:
    """A lower-case hex digest or prefix (>= 8 digits), or None."""
    if sha256 is None:
        return None
    text = str(sha256).strip().lower()
    if not _HEX.fullmatch(text):
        raise UserInputError(
            f"sha256={sha256!r} is invalid; expected the file's SHA-256 as "
            f"{_MIN_HASH_DIGITS} to 64 hex digits (a prefix is checked as one)."
        )
    return text


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_error(what, expected, actual):
    return DownloadError(
        f"{what} has SHA-256 {actual}, but {expected} was expected: it is "
        "corrupt or another file; it was not kept. Download it again, or "
        "check the URL and the expected hash."
    )


def mirrored(url: str, file_name: str) -> str:
    """`url`, or `<$KERAS_DEEPLAB_MIRROR>/<file_name>` when the variable is
    set (air-gapped sites, internal mirrors)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{file_name}" if mirror else url


def _stream(response, handle, digest):
    """Copies the body; returns the byte count. Raises DownloadError when
    the server stated a length the body did not reach."""
    expected = response.headers.get("Content-Length")
    received = 0
    while chunk := response.read(_CHUNK):
        handle.write(chunk)
        digest.update(chunk)
        received += len(chunk)
    if (
        expected is not None
        and expected.isdigit()
        and received != int(expected)
    ):
        raise http.client.IncompleteRead(b"", int(expected) - received)
    return received


def download(url: str, target, *, sha256=None) -> Path:
    """Fetches `url` into `target` unless a verified copy is already there.

    Args:
        url: str. An http(s) URL.
        target: Path. Where the file is kept.
        sha256: str or None. Expected SHA-256 (full, or a prefix of >= 8
            hex digits); None skips the check.

    Returns:
        `target`.

    Raises:
        DownloadError: for no network, an HTTP error, a body cut short or a
            hash mismatch, naming the URL and where the file can be placed
            by hand; nothing is left at `target`.
    """
    target = Path(target)
    sha256 = check_sha256(sha256)
    if target.is_file():
        actual = file_sha256(target)
        if sha256 is None or actual.startswith(sha256):
            return target
        print(
            f"{target} has SHA-256 {actual}, not {sha256}: downloading it "
            "again",
            flush=True,
        )
        target.unlink()
    by_hand = (
        f"place the file at {str(target)!r} by hand, or set {MIRROR_ENV} to "
        "a server that has it"
    )
    print(f"downloading {url} -> {target}", flush=True)
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
            atomic_file(target) as temporary,
        ):
            with open(temporary, "wb") as handle:
                size = _stream(response, handle, digest)
            actual = digest.hexdigest()
            if sha256 is not None and not actual.startswith(sha256):
                raise _hash_error(f"the download of {url}", sha256, actual)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"{url} answered HTTP {err.code} {err.reason}; check the URL (or "
            f"the preset name), or {by_hand}."
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(
            f"cannot download {url} ({reason}); connect to the network, or "
            f"{by_hand}."
        ) from err
    except http.client.IncompleteRead as err:
        raise DownloadError(
            f"the download of {url} stopped {err.expected:,} bytes short of "
            f"its stated length; nothing was kept. Run again, or {by_hand}."
        ) from err
    print(f"downloaded {size / 2**20:.1f} MiB, SHA-256 {actual}", flush=True)
    return target
