"""The app answers only its own host names, bounds uploads, cleans its exports and checks its options at start.

Reliability probe 2026-12-07: E36/E38 (DNS rebinding: any Host header was answered, and a rebinding page
opened a private folder and read its frames back), E33 (no upload limit), E41 (a /tmp/stcorr_app_* folder
left per export), E42-E46 (busy or invalid port or host, --device cuda without CUDA, --max-side -5).
Real HTTP requests against a running server.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from app_helpers import write_shapes_folder  # noqa: E402

from stcorr.app.hosts import HostCheck, allowed_hosts, host_name  # noqa: E402
from stcorr.cli import main  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from stcorr.app import launch

    clip, _ = write_shapes_folder(tmp_path_factory.mktemp("app") / "clip", count=4)
    port = _free_port()
    page = launch(None, model="lab-pixels", port=port, block=False, max_upload_mb=1)
    yield f"http://127.0.0.1:{port}", port, page, clip
    page.close()


def test_foreign_host_header_is_refused(server):
    """E38: GET /config with Host: evil.example was answered 200."""
    base, port, _, _ = server
    for host in (f"evil.example:{port}", "evil.example", f"rebind.evil.example:{port}", "127.0.0.1.evil.example"):
        response = httpx.get(f"{base}/config", headers={"Host": host}, timeout=30)
        assert response.status_code == 403, host
        assert "--allowed-hosts" in response.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}"):
        assert httpx.get(f"{base}/config", headers={"Host": host}, timeout=30).status_code == 200, host


def test_dns_rebinding_cannot_open_a_folder_or_read_files(server, tmp_path):
    """E36: the queue with Host and Origin of a rebinding page opened a private folder, and its frames were
    served back through /gradio_api/file=. Now neither the queue nor the file route answers that host."""
    base, port, _, clip = server
    evil = {"Host": f"rebind.evil.example:{port}", "Origin": f"http://rebind.evil.example:{port}"}
    body = {"data": [str(clip), None, "", None, False], "fn_index": 0, "session_hash": "rebind01",
            "event_data": None, "trigger_id": None}
    assert httpx.post(f"{base}/gradio_api/queue/join", json=body, headers=evil, timeout=30).status_code == 403
    assert httpx.get(f"{base}/gradio_api/queue/data", params={"session_hash": "rebind01"}, headers=evil,
                     timeout=30).status_code == 403
    frame = clip / "00000.png"
    assert httpx.get(f"{base}/gradio_api/file={frame}", headers=evil, timeout=30).status_code == 403
    assert httpx.get(f"{base}/", headers=evil, timeout=30).status_code == 403


def test_upload_above_the_limit_is_refused(server, tmp_path):
    """E33: a 200 MB upload was stored with no limit; the server here allows 1 MB."""
    base, _, _, _ = server
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(2_000_000))
    with big.open("rb") as handle:
        response = httpx.post(f"{base}/gradio_api/upload", files={"files": ("big.mp4", handle)}, timeout=60)
    assert response.status_code in (400, 413), response.text
    small = tmp_path / "small.mp4"
    small.write_bytes(bytes(1000))
    with small.open("rb") as handle:
        assert httpx.post(f"{base}/gradio_api/upload", files={"files": ("small.mp4", handle)},
                          timeout=60).status_code == 200


def test_host_names_and_policy():
    assert host_name("Evil.Example.:7860") == "evil.example" and host_name("[::1]:80") == "::1"
    names = allowed_hosts("127.0.0.1")
    assert names >= {"localhost", "127.0.0.1", "::1"} and "evil.example" not in names
    assert "box.lan" in allowed_hosts("127.0.0.1", ["box.lan"]) and allowed_hosts("127.0.0.1", ["*"]) is None
    assert "10.0.0.7" in allowed_hosts("10.0.0.7")
    wildcard = HostCheck(None, allowed_hosts("0.0.0.0"), any_ip=True)
    assert wildcard.accepts("192.168.1.20:7860") and wildcard.accepts(f"{socket.gethostname()}:7860")
    assert not wildcard.accepts("evil.example:7860") and not wildcard.accepts("")
    assert not HostCheck(None, allowed_hosts("127.0.0.1")).accepts("192.168.1.20")


def test_exports_share_one_folder_that_goes_away(tmp_path):
    """E41: every export left a new /tmp/stcorr_app_* folder, never removed."""
    from stcorr.app.ui import ModelCache, build_app
    from stcorr.app.workbench import Workbench

    clip, ids = write_shapes_folder(tmp_path / "clip", count=4)
    models = ModelCache("cpu")
    page = build_app(models)
    export = next(block.fn for block in page.fns.values() if block.name == "do_export")
    wb = Workbench(models.get("lab-pixels"), "lab-pixels", clip)
    wb.set_mask(0, ids[0])
    before = set(Path(tempfile.gettempdir()).glob("stcorr_app_*"))
    zips = [Path(export(wb, None, 0)[0]) for _ in range(3)]
    root = Path(page.stcorr_exports.name)
    assert len(set(zips)) == 1 and root in zips[0].parents and zips[0].is_file()
    assert set(Path(tempfile.gettempdir()).glob("stcorr_app_*")) - before <= {root}
    assert [path.name for path in root.rglob("*") if path.is_file()] == [zips[0].name]
    with zipfile.ZipFile(zips[0]) as archive:
        assert len([name for name in archive.namelist() if name.startswith("masks/")]) == 4
    code = ("from stcorr.app.ui import ModelCache, build_app\n"
            "print(build_app(ModelCache('cpu')).stcorr_exports.name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not Path(result.stdout.strip()).exists()  # removed when the process exits


def test_busy_port_is_typed(capsys):
    """E42: a busy port ended in Gradio's raw OSError."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--port", str(port), "--device", "cpu"]) == 2
    assert "already in use" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--port", "99999"], "--port"),                  # E43: raw OverflowError
    (["--port", "0"], "--port"),
    (["--host", "999.1.1.1"], "--host"),              # E46: 'Cannot find empty port' traceback
    (["--max-side", "-5"], "--max-side"),             # E45: reported only inside the page
    (["--max-frames", "0"], "--max-frames"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
])
def test_bad_start_options_are_typed_before_the_server_starts(argv, message, capsys):
    assert main(["app", "--device", "cpu", "--port", str(_free_port()), *argv]) == 2
    assert message in capsys.readouterr().err


def test_absent_device_is_typed_at_start(capsys):
    """E44: --device cuda without CUDA started the server and failed only inside the page."""
    import torch

    device = "cuda:7" if torch.cuda.is_available() else "cuda"
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(["app", "--device", device, "--port", str(_free_port())]) == 2
    assert "device" in capsys.readouterr().err


def test_the_page_still_works_for_localhost(server):
    base, _, _, _ = server
    response = httpx.get(f"{base}/", timeout=30)
    assert response.status_code == 200 and "stcorr app" in response.text
