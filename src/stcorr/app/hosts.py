"""Which ``Host`` names the app answers, and the ASGI middleware that refuses the others.

Binding to 127.0.0.1 keeps other machines out, but not other web pages: a page on ``evil.example`` whose name
is re-pointed to 127.0.0.1 (DNS rebinding) is same-origin with the app for the browser, so CORS does not stop
it. What gives it away is the ``Host`` header, which carries the attacker's name. The app answers only
localhost names, the address it is bound to (with a wildcard bind: IP literals and this machine's names,
since rebinding needs a domain name) and the names given with ``--allowed-hosts``; anything else gets 403.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

__all__ = ["allowed_hosts", "host_name", "HostCheck", "LOCAL_NAMES"]

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_name(header: str) -> str:
    """The name in a ``Host`` header: the port, IPv6 brackets, a trailing dot and case removed."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:7860
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The host names the app answers when bound to ``bound``; None means any (``extra`` holds ``*``).

    A wildcard bind (0.0.0.0, ::) adds this machine's host names; IP literals are then accepted as well
    (see :class:`HostCheck`).
    """
    names = {host_name(name) for name in extra if name.strip()}
    if "*" in names:
        return None
    names |= LOCAL_NAMES
    if host_name(bound) in _WILDCARDS:
        names |= {host_name(socket.gethostname()), host_name(socket.getfqdn())}
    else:
        names.add(host_name(bound))
    return frozenset(names)


class HostCheck:
    """ASGI middleware: HTTP requests and websockets whose ``Host`` is not allowed get 403 and reach nothing."""

    def __init__(self, app: Any, allowed: frozenset[str] | None, any_ip: bool = False) -> None:
        self.app = app
        self.allowed = allowed
        self.any_ip = any_ip

    def accepts(self, header: str | None) -> bool:
        if self.allowed is None:
            return True
        if not header:
            return False
        name = host_name(header)
        return name in self.allowed or (self.any_ip and _is_ip(name))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.accepts(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (f"stcorr app: host {host!r} is not allowed. It answers localhost and the address it is bound "
                "to; start it with --allowed-hosts NAME to add a name you use.\n").encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
