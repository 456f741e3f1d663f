"""``stcorr app``: a local browser app to paint a mask, propagate it, correct frames and export.

Needs the ``app`` extra (``pip install "stcorr[app]"``, Gradio). Layers: :mod:`stcorr.app.painting`
(paint layers <-> masks, pictures), :mod:`stcorr.app.workbench` (one video and its propagation session,
no browser), :mod:`stcorr.app.ui` (the Gradio page). :func:`launch` serves the page on 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["launch", "DEFAULT_HOST", "DEFAULT_PORT"]

logger = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _require_gradio() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ImportError('stcorr app needs Gradio: pip install "stcorr[app]"') from exc


def launch(video: str | None = None, *, model: str | None = None, host: str = DEFAULT_HOST,
           port: int = DEFAULT_PORT, max_side: int | None = None, max_frames: int | None = None,
           device: str | None = None, block: bool = True) -> Any:
    """Serve the app; returns the Gradio Blocks (``block=False`` returns at once, for tests and scripts).

    ``video`` is opened when the page loads (its first ``max_frames`` frames, processed at ``max_side``);
    ``model`` is a name or path (default: the embedded model).
    The server binds ``host`` (default 127.0.0.1: this machine only).
    """
    _require_gradio()
    from stcorr.app.ui import CSS, ModelCache, build_app

    page = build_app(ModelCache(device), video=video, model=model, max_side=max_side, max_frames=max_frames)
    page.queue(default_concurrency_limit=1)
    scope = "this machine only" if host in ("127.0.0.1", "localhost") else "reachable from your network"
    page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                footer_links=[], show_error=True, css=CSS)
    print(f"stcorr app on {page.local_url} (bound to {host}: {scope}; --host 0.0.0.0 shares it)", flush=True)
    if block:
        page.block_thread()
    return page
