"""The example scripts the README's first command runs: the data fetcher fails loudly, with the fix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FETCH = Path(__file__).resolve().parents[1] / "examples" / "fetch_opencv_data.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def run_fetch(dest: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(FETCH), str(dest)], capture_output=True, text=True, env={"PATH": path},
                          timeout=60)


def test_fetch_without_apt_lists_says_to_run_apt_get_update(tmp_path):
    """A fresh container before `apt-get update`: apt-get exits 100 with "Unable to locate package"."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package opencv-doc' >&2\nexit 100\n")
    (fake / "apt-get").chmod(0o755)
    for tool in ("dpkg-deb", "mktemp", "rm", "sed"):
        if shutil.which(tool):
            (fake / tool).symlink_to(shutil.which(tool))
    if not (fake / "dpkg-deb").exists():
        (fake / "dpkg-deb").write_text("#!/bin/sh\nexit 1\n")
        (fake / "dpkg-deb").chmod(0o755)
    result = run_fetch(tmp_path / "data", str(fake))
    assert result.returncode != 0
    assert "Unable to locate package opencv-doc" in result.stderr  # apt-get's own message is shown
    assert "apt-get update" in result.stderr
    assert not (tmp_path / "data").exists()


def test_fetch_without_apt_get_says_it_needs_debian(tmp_path):
    result = run_fetch(tmp_path / "data", str(tmp_path / "no-such-bin"))
    assert result.returncode != 0
    assert "apt-get not found" in result.stderr and "Debian" in result.stderr
    assert result.stdout == ""
