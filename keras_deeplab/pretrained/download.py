"""Downloads into a cache, verified, atomic: a file is there whole or not.

The cache lives in `$KERAS_DEEPLAB_CACHE`, else `$KERAS_HOME/keras_deeplab`
(`~/.keras/keras_deeplab`), beside where Keras keeps its own downloads.
A download streams into a temporary sibling while its SHA-256 is computed,
within a total deadline, is checked against the stated length, hash, size
and kind of file, and only then renamed into place; anything else leaves
nothing behind (a killed download's temporary file is removed by the next
download into the same folder). A file already in the cache that fails its
check is never deleted: it is moved aside and named.
"""

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from keras_deeplab.utils.atomic import atomic_file, remove_dead_partials
from keras_deeplab.utils.errors import UserInputError

CACHE_ENV = "KERAS_DEEPLAB_CACHE"
MIRROR_ENV = "KERAS_DEEPLAB_MIRROR"
DEADLINE_ENV = "KERAS_DEEPLAB_DOWNLOAD_DEADLINE"
DOWNLOADS = "downloads"
REJECTED_SUFFIX = ".rejected"
_TIMEOUT_S = 60  # per read: a server that stops sending
# A whole download: 245 MB at 200 kB/s is 20 minutes.
_DEADLINE_S = 3600
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{8,64}")
_MIN_HASH_DIGITS = 8
_MIRROR_SCHEMES = ("http", "https", "file")


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


def deadline_seconds() -> float:
    """`$KERAS_DEEPLAB_DOWNLOAD_DEADLINE` seconds, else one hour."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return _DEADLINE_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UserInputError(
            f"{DEADLINE_ENV}={text!r} is invalid; expected the seconds a "
            "whole download may take, e.g. 7200."
        )
    return seconds


def mirrored(url: str, file_name: str) -> str:
    """`url`, or `<$KERAS_DEEPLAB_MIRROR>/<file_name>` when the variable is
    set (air-gapped sites, internal mirrors: http(s) or file URLs)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    if urllib.parse.urlparse(mirror).scheme not in _MIRROR_SCHEMES:
        local = Path(mirror).expanduser().absolute().as_uri()
        raise UserInputError(
            f"{MIRROR_ENV}={mirror!r} is not a URL; expected http://, "
            f"https:// or file:// (for a folder: {local})."
        )
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(file_name)}"


def moved_aside(path) -> Path:
    """Renames a cached file that failed a check to `<name>.rejected`
    (replacing an earlier one), so nothing is deleted; returns the new
    path."""
    path = Path(path)
    aside = path.with_name(path.name + REJECTED_SUFFIX)
    os.replace(path, aside)
    return aside


def _mismatch(path, sha256, size):
    """What is wrong with the file at `path`, or None."""
    if sha256 is not None:
        actual = file_sha256(path)
        if not actual.startswith(sha256):
            return f"SHA-256 {actual}, expected {sha256}"
    if size is not None and path.stat().st_size != size:
        return f"{path.stat().st_size:,} bytes, expected {size:,}"
    return None


def _stream(response, handle, digest, deadline):
    """Copies the body; returns the byte count. Raises IncompleteRead when
    the server stated a length the body did not reach, TimeoutError past
    the deadline (a server that trickles bytes never times out a read)."""
    expected = response.headers.get("Content-Length")
    received = 0
    # read1: what has arrived (read() waits for a whole chunk).
    while chunk := response.read1(_CHUNK):
        handle.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{received:,} bytes had arrived")
    if (
        expected is not None
        and expected.isdigit()
        and received != int(expected)
    ):
        raise http.client.IncompleteRead(b"", int(expected) - received)
    return received


def _fetch(url, target, *, sha256, size, check, by_hand):
    """Downloads `url` to `target` atomically; returns its SHA-256."""
    seconds = deadline_seconds()
    print(f"downloading {url} -> {target}", flush=True)
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
            atomic_file(target) as temporary,
        ):
            with open(temporary, "wb") as handle:
                received = _stream(
                    response, handle, digest, time.monotonic() + seconds
                )
            actual = digest.hexdigest()
            if sha256 is not None and not actual.startswith(sha256):
                raise DownloadError(
                    f"the download of {url} has SHA-256 {actual}, but "
                    f"{sha256} was expected: it is corrupt or another file; "
                    "it was not kept. Download it again, or check the URL "
                    "and the expected hash."
                )
            if size is not None and received != size:
                raise DownloadError(
                    f"the download of {url} has {received:,} bytes, not the "
                    f"publisher's {size:,}; it was not kept."
                )
            if check is not None:
                problem = check(temporary)
                if problem:
                    raise DownloadError(
                        f"the download of {url} is {problem}; it was not "
                        f"kept. Check the URL, or {by_hand}."
                    )
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"{url} answered HTTP {err.code} {err.reason}; check the URL (or "
            f"the preset name), or {by_hand}."
        ) from err
    except TimeoutError as err:
        raise DownloadError(
            f"the download of {url} took longer than its deadline of "
            f"{seconds:g} s ({err}); nothing was kept. Raise {DEADLINE_ENV} "
            f"for a slow link, or {by_hand}."
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
    print(f"downloaded {received / 2**20:.1f} MiB, SHA-256 {actual}")
    return actual


def download(url: str, target, *, sha256=None, size=None, check=None) -> Path:
    """Fetches `url` into `target` unless a verified copy is already there.

    A file at `target` (an earlier download, or one placed there by hand)
    is used when it passes the checks; otherwise it is moved aside to
    `<name>.rejected`, never deleted, and the download is tried. A file
    used or downloaded without a hash prints its SHA-256 to pin.

    Args:
        url: str. An http(s) or file URL.
        target: Path. Where the file is kept.
        sha256: str or None. Expected SHA-256 (full, or a prefix of >= 8
            hex digits); None skips the check.
        size: int or None. Expected size in bytes.
        check: fn(path) -> str or None. A last check of the file's content
            (e.g. that it is a PyTorch file), saying what is wrong.

    Returns:
        `target`.

    Raises:
        DownloadError: for no network, an HTTP error, a body cut short, a
            deadline passed or a failed check, naming the URL and where the
            file can be placed by hand; nothing is left at `target`.
    """
    target = Path(target)
    sha256 = check_sha256(sha256)
    by_hand = (
        f"place the file at {str(target)!r} by hand, or set {MIRROR_ENV} to "
        "a server that has it"
    )
    note = ""
    if target.is_file():
        problem = _mismatch(target, sha256, size)
        if problem is None and check is not None:
            problem = check(target)
        if problem is None:
            if sha256 is None:
                _not_verified(target, file_sha256(target))
            return target
        aside = moved_aside(target)
        note = (
            f"{str(target)!r} is not the expected file ({problem}); it was "
            f"moved to {str(aside)!r}. "
        )
        print(note + "Downloading it again.", flush=True)
    remove_dead_partials(target.parent)
    try:
        actual = _fetch(
            url, target, sha256=sha256, size=size, check=check, by_hand=by_hand
        )
    except DownloadError as err:
        raise DownloadError(note + str(err)) from err
    if sha256 is None:
        _not_verified(target, actual)
    return target


def _not_verified(path, digest):
    print(
        f"note: {path} was not verified (no published hash); its SHA-256 is "
        f"{digest}: pass sha256= to pin it.",
        flush=True,
    )
