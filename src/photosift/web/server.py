"""Serving the gallery: a socket bound before the server starts (a busy port is a one-line error), and uvicorn
in the foreground (``photosift serve``) or in a thread (tests)."""

from __future__ import annotations

import socket
from typing import Any

from fastapi import FastAPI

from photosift.core.config import Settings
from photosift.core.errors import PhotosiftError
from photosift.web.app import create_app


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> Any:
    """A uvicorn server for ``app`` (tests run it in a thread; :func:`run_server` in the foreground)."""
    import uvicorn

    # A short graceful-shutdown window: an open progress stream must not hold Ctrl-C hostage.
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=3
    )
    return uvicorn.Server(config)


class ServeError(PhotosiftError):
    """The gallery cannot listen where it was asked to (the port is taken, the address is not this machine's)."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` before the server starts, so a busy port is a one-line error."""
    bare = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, never a live one
        sock.bind((bare, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def run_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 8765, sock: socket.socket | None = None
) -> None:
    """Serve the gallery until Ctrl-C on ``sock`` (default: :func:`listen`); the CLI prints the address."""
    sock = sock or listen(host, port)
    make_server(create_app(settings, host=host, port=port), host, port).run(sockets=[sock])


__all__ = ["ServeError", "listen", "make_server", "run_server"]
