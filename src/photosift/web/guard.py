"""What keeps the gallery local: which Host headers it answers (DNS rebinding gets 400), the security headers
on every response, and the cross-origin isolation only the in-browser classifier's page gets."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def is_loopback_host(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host header values a browser sends for this server; anything else is DNS rebinding or a typo."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    bound = host.strip("[]")
    if bound not in ("0.0.0.0", "::", ""):
        names.add(f"[{bound}]" if ":" in bound else bound)
    hosts = {f"{n}:{port}".lower() for n in names}
    if port == 80:
        hosts |= {n.lower() for n in names}
    return hosts


def security_headers(img_src: str = "'self'", script_src: str = "'self'") -> list[tuple[bytes, bytes]]:
    csp = (
        f"default-src 'self'; img-src {img_src}; style-src 'self'; script-src {script_src}; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", csp.encode()),
    ]


class GuardMiddleware:
    """Rejects unexpected Host headers and adds security headers to every response (pure ASGI: no buffering)."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = security_headers()
    # "Classify here" runs ONNX Runtime Web: compiling WebAssembly needs 'wasm-unsafe-eval' (not 'unsafe-eval'),
    # the chosen photos are shown from blob: URLs, and WASM threads need SharedArrayBuffer, which only a
    # cross-origin isolated page gets (COOP + COEP). Only that page and the runtime's own files get these.
    ISOLATED_PREFIXES = ("/classify-here", "/static/ort/")
    ISOLATED_HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        *security_headers("'self' blob:", "'self' 'wasm-unsafe-eval'"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-embedder-policy", b"require-corp"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp, hosts: set[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if host.lower() not in self.hosts:
            body = b"unexpected Host header: open the gallery at the address photosift serve printed\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), *self.HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        extra = self.ISOLATED_HEADERS if scope["path"].startswith(self.ISOLATED_PREFIXES) else self.HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
