"""Fetching weights through the Hugging Face Hub cache, with content verification.

A file pinned to a 40-hex revision is looked up in the local cache first (no network call at all); only
when it is missing is it downloaded. Either way its size and sha256 are checked before use; a file once
verified is remembered by (path, size, modification time), so loading it again costs no second hash. A
mismatch raises :class:`~stcorr.errors.ChecksumError`; a fresh download that fails the check is deleted
from the cache, so the next call downloads it again. Offline mode
(``local_files_only=True``, or ``HF_HUB_OFFLINE=1``) never touches the network; a missing file then
raises :class:`~stcorr.errors.WeightsUnavailableError` with the command that downloads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from stcorr.errors import ChecksumError, WeightsUnavailableError

__all__ = ["sha256_of", "verify_file", "fetch_hub_file", "download_command"]

logger = logging.getLogger(__name__)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_REFETCH_HINT = "Delete it and load the model again to re-download it"

# (resolved path, size, mtime in ns) -> sha256 of the files already hashed in this process.
_verified: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_of(path)
    return _verified[key]


def verify_file(
    path: str | os.PathLike[str], *, sha256: str | None, size: int | None, fix_hint: str = _REFETCH_HINT
) -> None:
    """Raise :class:`ChecksumError` if ``path`` does not have the expected size and sha256.

    The hash of a file is computed once per (path, size, modification time) and process; ``fix_hint``
    ends the error message (what the user should do about a corrupt file).
    """
    path = Path(path)
    stat = path.stat()
    if size is not None and stat.st_size != size:
        raise ChecksumError(
            f"{path} has {stat.st_size} bytes, expected {size}: the file is truncated or corrupt. {fix_hint}"
        )
    if sha256 is not None:
        actual = _cached_sha256(path, stat)
        if actual != sha256.lower():
            raise ChecksumError(
                f"{path} has sha256 {actual}, expected {sha256}: the file is corrupt or not the pinned one. "
                f"{fix_hint}"
            )


def download_command(repo_id: str, filename: str, revision: str | None) -> str:
    """The shell command that puts a Hub file into the local cache."""
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id} {filename}{rev}"


def _remove_cached(path: Path) -> None:
    """Delete a cached snapshot file and the blob it links to, so the next call downloads it again."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def fetch_hub_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Local path of ``repo_id/filename`` at ``revision``, from the Hub cache or freshly downloaded.

    Cached and downloaded files are both checked for size and sha256 (a freshly downloaded file that fails
    is deleted, then :class:`ChecksumError` is raised). ``local_files_only=None`` follows ``HF_HUB_OFFLINE``.
    """
    offline = constants.HF_HUB_OFFLINE if local_files_only is None else local_files_only
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if isinstance(cached, str):
        verify_file(cached, sha256=sha256, size=size)
        return Path(cached)
    if offline:
        raise WeightsUnavailableError(
            f"{repo_id}/{filename} (revision {revision or 'main'}) is not in the Hugging Face cache "
            f"({cache_dir or constants.HF_HUB_CACHE}) and offline mode is on (local_files_only or "
            f"HF_HUB_OFFLINE). Download it once where a network is available:\n    "
            f"{download_command(repo_id, filename, revision)}"
        )
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise WeightsUnavailableError(
            f"cannot download {repo_id}/{filename} (revision {revision or 'main'}): {exc}. "
            f"Retry, or fetch it where a network is available:\n    {download_command(repo_id, filename, revision)}"
        ) from exc
    logger.info("downloaded %s/%s to %s", repo_id, filename, path)
    try:
        verify_file(path, sha256=sha256, size=size)
    except ChecksumError:
        _remove_cached(path)
        raise
    return path
