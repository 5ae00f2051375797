"""Weight files that live on Google Drive (TriPlaneNet, In-N-Out's mapper archive), fetched with gdown.

Only `nvsvideo weights fetch NAME` downloads: nothing is fetched behind the user's back. The file is
received into `<weights>/.downloads/` (gdown keeps a partial file there, and the same command run again
resumes it), checked (its recorded sha256, else its content), and only then moved to where nvsvideo looks
for it; a file that fails the check is deleted.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from nvsvideo.cache.fingerprint import file_sha256
from nvsvideo.console import Reporter
from nvsvideo.errors import WeightsError
from nvsvideo.files import atomic_output
from nvsvideo.weights.registry import IN_N_OUT_CHECKPOINT, WeightFile, expected_path, how_to_get
from nvsvideo.weights.verify import verify_file

DriveDownload = Callable[[str, Path, bool], None]
"""(file id, output, quiet): download a Drive file to `output`, resuming an earlier partial download of it;
raises `DownloadFailed`."""

#: Folder of the weights folder where downloads are received and checked.
STAGING = ".downloads"


class DownloadFailed(Exception):
    """The transfer stopped (network, quota, a file that is not public); the part received is kept."""


def gdown_download(file_id: str, output: Path, quiet: bool) -> None:
    """`DriveDownload` through gdown, which handles Drive's confirmation pages and resumes partial files."""
    try:
        import gdown
        import gdown.exceptions
        import requests
    except ImportError:
        raise WeightsError('downloading from Google Drive needs gdown: pip install "nvsvideo[gdrive]"') from None
    try:
        gdown.download(id=file_id, output=str(output), quiet=quiet, resume=True)
    except requests.exceptions.ConnectionError as err:
        raise DownloadFailed("cannot reach drive.google.com: no network?") from err
    except (gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError,
            requests.exceptions.RequestException, OSError) as err:
        raise DownloadFailed(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from err


def fetch_from_drive(entry: WeightFile, weights_dir: Path, env: Mapping[str, str], reporter: Reporter,
                     download: DriveDownload = gdown_download) -> Path:
    """Download `entry` from Drive, check it and put it where it is looked for; returns that path.

    Raises:
        WeightsError: gdown missing, the transfer failed (run again to resume), or the file failed its check
            (then it is deleted).
    """
    assert entry.drive_id, entry.name
    target = expected_path(entry, weights_dir, env)
    staged = weights_dir / STAGING / (entry.archive or target.name)
    staged.parent.mkdir(parents=True, exist_ok=True)
    reporter.info(f"{entry.name}: downloading Google Drive file {entry.drive_id} into {staged.parent}")
    try:
        download(entry.drive_id, staged, reporter.quiet)
    except DownloadFailed as err:
        raise WeightsError(f"could not download {entry.name} from Google Drive ({err}); running the same command "
                           f"again resumes it, or download {entry.url} in a browser and save it as {target}") from None
    digest = file_sha256(staged)
    problem = _check(entry, staged, digest)
    if problem is not None:
        staged.unlink()
        raise WeightsError(f"the download of {entry.name} {problem}, so it was deleted; "
                           f"{how_to_get(entry, weights_dir, env)}")
    if entry.archive:
        _unpack_mappers(staged, target.parent)
        staged.unlink()
        target = target.parent / PurePosixPath(entry.filename).stem / IN_N_OUT_CHECKPOINT
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    note = "" if entry.sha256 else " (no sha256 is recorded for this file; its content was checked)"
    reporter.info(f"{entry.name}: saved {target}, sha256 {digest}{note}")
    return target


def _check(entry: WeightFile, path: Path, digest: str) -> str | None:
    """Why the downloaded file is not `entry`'s, or None: the recorded sha256, else the content."""
    if entry.sha256:
        return None if digest == entry.sha256 else f"has sha256 {digest}, not the recorded {entry.sha256}"
    if entry.archive:
        members = _mapper_members(path)
        if members is None:
            return "is not a zip archive"
        wanted = PurePosixPath(entry.filename).stem
        return None if wanted in members else f"holds no {wanted}/{IN_N_OUT_CHECKPOINT}"
    result = verify_file(path, entry.kind, entry.variant)
    return None if result.ok else f"is not the expected file ({result.detail})"


def _mapper_members(archive: Path) -> dict[str, str] | None:
    """{edit: member} of the In-N-Out mappers in a zip (`[mapper_results/]<edit>/checkpoints/best_model.pt`)."""
    if not zipfile.is_zipfile(archive):
        return None
    tail = PurePosixPath(IN_N_OUT_CHECKPOINT).parts
    found = {}
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            parts = PurePosixPath(name).parts
            # Only the edit's folder name is taken from the archive, and never from a member that climbs out.
            if len(parts) > len(tail) and parts[-len(tail):] == tail and ".." not in parts and parts[0] != "/":
                found[parts[-len(tail) - 1]] = name
    return found


def _unpack_mappers(archive: Path, folder: Path) -> None:
    """Write each mapper of the archive to `folder/<edit>/checkpoints/best_model.pt`, each file atomically."""
    members = _mapper_members(archive) or {}
    with zipfile.ZipFile(archive) as zf:
        for edit, member in members.items():
            out = folder / edit / IN_N_OUT_CHECKPOINT
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, atomic_output(out) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
