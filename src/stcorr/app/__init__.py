"""``stcorr app``: a local browser app to paint a mask, propagate it, correct frames and export.

Needs the ``app`` extra (``pip install "stcorr[app]"``, Gradio). Layers: :mod:`stcorr.app.painting`
(paint layers <-> masks, pictures), :mod:`stcorr.app.workbench` (one video and its propagation session,
no browser), :mod:`stcorr.app.ui` (the Gradio page). :func:`launch` serves the page on 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from stcorr.errors import InputError, OutputWriteError

__all__ = ["launch", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_UPLOAD_MB"]

logger = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 500  # largest upload (a video or a mask); --max-upload-mb changes it


def _require_gradio() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ImportError('stcorr app needs Gradio: pip install "stcorr[app]"') from exc


def _check_start(host: str, port: int, max_side: int | None, max_frames: int | None, device: str | None,
                 max_upload_mb: float) -> None:
    """Refuse bad start-up options with a typed error before the server starts (not later, in the page)."""
    from stcorr.device import resolve_device

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"--port must be a port number from 1 to 65535, got {port!r}; e.g. --port {DEFAULT_PORT}")
    if max_side is not None and max_side < 0:
        raise InputError(f"--max-side must be a positive number of pixels or 0 (full resolution), got {max_side}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {max_frames}")
    if not max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be a positive size in MB, got {max_upload_mb}")
    resolve_device(device)  # DeviceError listing the devices this machine has
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host!r} is not an address or a name of this machine ({exc}); use 127.0.0.1 "
                         "(this machine only) or 0.0.0.0 (every network interface)") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OutputWriteError(f"port {port} on {host} is already in use (another app or server); "
                                       f"choose another one, e.g. --port {port + 1 if port < 65535 else 7861}") from exc
            raise OutputWriteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; use --host 127.0.0.1 "
                                   "or an address of this machine, and a free --port") from exc


def launch(video: str | None = None, *, model: str | None = None, host: str = DEFAULT_HOST,
           port: int = DEFAULT_PORT, max_side: int | None = None, max_frames: int | None = None,
           device: str | None = None, allowed_hosts: Sequence[str] = (), max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
           block: bool = True) -> Any:
    """Serve the app; returns the Gradio Blocks (``block=False`` returns at once, for tests and scripts).

    ``video`` is opened when the page loads (its first ``max_frames`` frames, processed at ``max_side``);
    ``model`` is a name or path (default: the embedded model).
    The server binds ``host`` (default 127.0.0.1: this machine only) and answers only requests whose ``Host``
    is a localhost name, the bound address or one of ``allowed_hosts`` (``"*"``: any), which stops DNS
    rebinding (see :mod:`stcorr.app.hosts`). Uploads above ``max_upload_mb`` are refused. Bad options (port,
    host, device, sizes) raise a typed error before the server starts; a busy port raises
    :class:`~stcorr.errors.OutputWriteError`.
    """
    _check_start(host, port, max_side, max_frames, device, max_upload_mb)
    _require_gradio()
    from starlette.middleware import Middleware

    from stcorr.app.hosts import HostCheck
    from stcorr.app.hosts import allowed_hosts as hosts_for
    from stcorr.app.ui import CSS, HEAD, ModelCache, build_app

    names = hosts_for(host, allowed_hosts)
    check = Middleware(HostCheck, allowed=names, any_ip=host.strip() in ("0.0.0.0", "::"))
    page = build_app(ModelCache(device), video=video, model=model, max_side=max_side, max_frames=max_frames)
    page.queue(default_concurrency_limit=1)
    scope = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "reachable from your network"
    try:
        # no SSR (a Node front server) and no static-file worker processes: every request goes through the check
        page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                    footer_links=[], show_error=True, css=CSS, head=HEAD, app_kwargs={"middleware": [check]},
                    max_file_size=int(max_upload_mb * 1_000_000), ssr_mode=False, num_workers=0)
    except OSError as exc:  # the port was taken between the check and the start
        raise OutputWriteError(f"cannot start the app on {host}:{port}: {exc}; choose another --port") from exc
    answered = "any host name" if names is None else ", ".join(sorted(names))
    print(f"stcorr app on {page.local_url} (bound to {host}: {scope}; --host 0.0.0.0 shares it; "
          f"answers {answered}; uploads up to {max_upload_mb:g} MB)", flush=True)
    if block:
        page.block_thread()
    return page
