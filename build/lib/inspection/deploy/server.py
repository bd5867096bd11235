"""Serve the browser bundle locally and drive headless Chromium (used by the web stage and tests).

    python -m commands.serve [models/web] [--port 8000] [--host 127.0.0.1]     # what `make serve` runs

The server sends the cross-origin isolation headers (so the WebAssembly backend may use threads) and
application/wasm for .wasm files. It serves files only: no directory listings (404), and odd paths
(NUL bytes, over-long names, bad escapes) get a plain 400/404, never a traceback. It listens on the
loopback address unless --host says otherwise, and then prints a warning (no login, no https).
"""
from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from inspection.errors import UserError


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript", ".json": "application/json", ".bin": "application/octet-stream"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the stage prints its own progress
        pass

    def list_directory(self, path):  # files only: a folder without index.html is not shown
        self.send_error(404, "Not found")
        return None

    def send_head(self):
        try:
            return super().send_head()
        except (ValueError, OSError, UnicodeError):  # NUL byte, name too long, undecodable path...
            self.send_error(400, "Bad request")
            return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that hangs up is not an error
        pass


@contextlib.contextmanager
def serve(directory: Path, port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``directory`` over http in a background thread; yields the base URL."""
    if not (Path(directory) / "index.html").exists():
        raise UserError(f"{directory}/index.html is missing; build the bundle first (dvc repro web)")
    check_port(port)
    server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
    try:
        server = server_class((host, port), functools.partial(_Handler, directory=str(directory)))
    except (OSError, OverflowError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cannot listen on {host}:{port} ({why}); pick another port with --port or another "
                        f"address with --host") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0-65535; 0 picks a free one); e.g. --port 8000")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_chromium(executable: Path | str) -> None:
    """Fail in a second, with one line, when the browser the web stage needs is not there."""
    if not Path(executable).expanduser().exists():
        raise UserError(f"Chromium not found at {executable}; install it (apt-get install chromium) or set "
                        f"web.chromium in params.yaml")


@contextlib.contextmanager
def chromium(executable: Path | str) -> Iterator[object]:
    """A headless system Chromium driven by Playwright."""
    require_chromium(executable)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_inspector(browser, url: str, timeout_ms: int = 60_000):
    """Open the inspector page and wait until its model is loaded; returns (page, backend info, console log)."""
    page = browser.new_page()
    log: list[str] = []
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    page.goto(url)
    try:
        info = page.evaluate("() => window.inspector.ready")
    except Exception as exc:  # the page reports why it could not start
        status = page.text_content("#status") or ""
        raise RuntimeError(f"inspector page did not start: {status or exc}; console: {log[-5:]}") from None
    page.set_default_timeout(timeout_ms)
    return page, info, log


TABLE_JS = """() => Array.from(document.querySelectorAll('#results tbody tr')).map((tr) => ({
    file: tr.dataset.file, route: tr.dataset.route, reason: tr.querySelector('td.reason').firstChild.textContent,
    probability: tr.dataset.probability === undefined ? null : Number(tr.dataset.probability),
    ood_score: tr.dataset.ood === undefined ? null : Number(tr.dataset.ood) }))"""


def table(page) -> list[dict]:
    """The page's result rows: file, route, reason, probability (None when unreadable), ood_score."""
    return page.evaluate(TABLE_JS)


def upload(page, files: list[Path | str], timeout_ms: int = 60_000) -> list[dict]:
    """Choose ``files`` in the page's file picker, wait until they are inspected, return their rows."""
    before = page.locator("#results tbody tr").count()
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {before + len(files)}",
                           timeout=timeout_ms)
    page.evaluate("() => window.inspector.idle()")
    return table(page)[before:]
