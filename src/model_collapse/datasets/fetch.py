"""Checksummed, atomic, retrying downloads into a local cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import cache_dir  # re-exported: `from .fetch import cache_dir` keeps working
from .errors import DataError

__all__ = ["DataError", "cache_dir", "fetch", "md5_file", "mirror_bases", "offline"]

BACKOFF = 0.5  # seconds before the 2nd attempt, doubling after; tests set it to 0
_CHUNK = 1 << 20


def offline() -> bool:
    """True when MODEL_COLLAPSE_OFFLINE forbids downloads."""
    return os.environ.get("MODEL_COLLAPSE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def mirror_bases(defaults: list[str]) -> list[str]:
    """Base URLs to try: MODEL_COLLAPSE_MIRROR (comma-separated) if set, else `defaults`."""
    env = [m.strip() for m in os.environ.get("MODEL_COLLAPSE_MIRROR", "").split(",") if m.strip()]
    return env or list(defaults)


def md5_file(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Truncated(Exception):
    """The server closed before sending Content-Length bytes."""


def _download(url: str, out_path: str, timeout: float) -> str:
    """Stream `url` into `out_path`; return the md5 of the bytes received."""
    req = urllib.request.Request(url, headers={"User-Agent": "model-collapse"})
    digest, size = hashlib.md5(), 0
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(out_path, "wb") as out:
        declared = resp.headers.get("Content-Length")
        while chunk := resp.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    # http.client returns b"" rather than raising on an early close, so check the length ourselves.
    if declared is not None and declared.isdigit() and size != int(declared):
        raise _Truncated(f"got {size} of {declared} bytes")
    return digest.hexdigest()


def fetch(name: str, md5: str, mirrors: list[str], dest_dir: str | os.PathLike,
          retries: int = 3, timeout: float = 30) -> Path:
    """Return dest_dir/name with the given md5, downloading it from the first mirror that works.

    `retries` is the number of attempts per mirror; MODEL_COLLAPSE_MIRROR replaces `mirrors`.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / name
    if target.exists():
        actual = md5_file(target)
        if actual == md5:
            return target
        raise DataError(f"{target} has md5 {actual}, expected {md5}: it is corrupt or a different "
                        f"version. Delete it and run again to re-fetch it.")
    urls = [m.rstrip("/") + "/" + name for m in mirror_bases(mirrors)]
    if offline():
        raise DataError(f"{name} is not in {dest_dir} and downloads are disabled "
                        f"(MODEL_COLLAPSE_OFFLINE=1); unset it or put the file there yourself.")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"Cannot create the cache folder {dest_dir} ({exc}); "
                        f"set MODEL_COLLAPSE_CACHE to a writable folder.") from None
    failures: list[str] = []
    bad: tuple[str, str] | None = None  # (url, md5) of a download whose content was wrong
    for url in urls:
        for attempt in range(max(1, retries)):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            # A temp file in dest_dir, so os.replace is atomic and nothing partial ever has `name`.
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
            os.close(fd)
            try:
                actual = _download(url, tmp, timeout)
                if actual == md5:
                    os.replace(tmp, target)
                    return target
                bad = (url, actual)
                failures.append(f"{url}: md5 {actual}, expected {md5}")
                break  # a mirror serving wrong bytes will serve them again; try the next one
            except urllib.error.HTTPError as exc:
                failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break  # permanent (e.g. 404): retrying this mirror cannot help
            except (OSError, ValueError, http.client.HTTPException, _Truncated) as exc:
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
            finally:
                Path(tmp).unlink(missing_ok=True)
    tried = "\n  ".join(failures)
    if bad is not None:
        raise DataError(f"Downloaded {name} from {bad[0]} but its md5 is {bad[1]}, expected {md5}; "
                        f"the file was discarded and nothing was cached. Attempts:\n  {tried}")
    raise DataError(f"Could not download {name}; tried {', '.join(urls)}:\n  {tried}\n"
                    f"Check the network, point MODEL_COLLAPSE_MIRROR at a working mirror, "
                    f"or place the file at {target}.")
