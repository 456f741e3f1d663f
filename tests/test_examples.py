"""The README's two commands: the data fetcher the first runs fails loudly with the fix; the second installs
everything the tests need and is what CI runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FETCH = ROOT / "examples" / "fetch_opencv_data.sh"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="needs bash")


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_second_command_installs_what_the_tests_need_and_matches_ci():
    first, second = readme_commands()
    assert first == 'pip install -e ".[video]" && examples/demo_vtest.sh'
    assert second == 'pip install -e ".[dev]" && python -m pytest -q'
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install --quiet -e ".[dev]"' in ci and ci.rstrip().endswith("python -m pytest -q")
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    names = {extra: {re.split(r"[<>=\[ ]", req)[0] for req in reqs} for extra, reqs in extras.items()}
    assert names["video"] | names["baselines"] | names["eval"] | names["cvat"] | {"pytest", "scipy"} <= names["dev"]


def run_fetch(dest: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(FETCH), str(dest)], capture_output=True, text=True, env={"PATH": path},
                          timeout=60)


@needs_bash
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


@needs_bash
def test_fetch_without_apt_get_says_it_needs_debian(tmp_path):
    result = run_fetch(tmp_path / "data", str(tmp_path / "no-such-bin"))
    assert result.returncode != 0
    assert "apt-get not found" in result.stderr and "Debian" in result.stderr
    assert result.stdout == ""
