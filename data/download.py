"""Checksummed, atomic downloads for the public datasets (tests never call these)."""
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .common import DataError

__all__ = ["sha256_of", "download_file", "fetch_files"]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url, dest, sha256=None, timeout=60):
    """Download ``url`` to ``dest`` (temp file + rename) and verify its sha256.

    An existing file with the right checksum is kept. Raises DataError with a one-line
    message when offline or when the checksum does not match.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        if sha256 is not None and sha256_of(tmp) != sha256:
            raise DataError(f"checksum mismatch for {url}: the server sent a different file; "
                            f"retry later or copy the file to {dest} by hand")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"cannot download {url} ({getattr(err, 'reason', err)}); you seem to be offline: "
                        f"copy the files by hand and pass their folder instead") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def fetch_files(base_url, files, folder):
    """Download every ``relative_path -> sha256`` of ``files`` from ``base_url`` into ``folder``."""
    folder = Path(folder)
    for rel, digest in files.items():
        download_file(f"{base_url}/{rel}", folder / rel, digest)
    return folder
