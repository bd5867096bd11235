"""Serve the browser bundle locally and drive headless Chromium (used by the web stage and tests).

    python -m stages.browser [models/web] [--port 8000]     # what `make serve` runs

The server sends the cross-origin isolation headers, so the WebAssembly backend may use threads.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from stages.errors import UserError, cli

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


@contextlib.contextmanager
def serve(directory: Path, port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``directory`` over http in a background thread; yields the base URL."""
    if not (Path(directory) / "index.html").exists():
        raise UserError(f"{directory}/index.html is missing; build the bundle first (dvc repro web)")
    try:
        server = ThreadingHTTPServer((host, port), functools.partial(_Handler, directory=str(directory)))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another port with --port") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(executable: Path | str) -> Iterator[object]:
    """A headless system Chromium driven by Playwright."""
    if not Path(executable).exists():
        raise UserError(f"Chromium not found at {executable}; install it (apt-get install chromium) or set "
                        f"web.chromium in params.yaml")
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


def upload(page, files: list[Path | str], timeout_ms: int = 60_000) -> list[dict]:
    """Choose ``files`` in the page's file picker, wait for their rows, return the table as dicts."""
    before = page.locator("#results tbody tr").count()
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {before + len(files)}",
                           timeout=timeout_ms)
    page.wait_for_function("document.getElementById('status').dataset.state !== 'busy'", timeout=timeout_ms)
    return page.evaluate("""() => Array.from(document.querySelectorAll('#results tbody tr')).map((tr) => ({
        file: tr.dataset.file, verdict: tr.dataset.verdict, probability: Number(tr.dataset.probability),
        route: tr.cells[5].textContent, camera: tr.cells[6].textContent }))""")[before:]


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve the browser bundle on localhost.")
    ap.add_argument("directory", nargs="?", default="models/web")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    with serve(Path(args.directory), args.port) as url:
        print(f"serving {args.directory} at {url} (Ctrl-C to stop)")
        threading.Event().wait()


if __name__ == "__main__":
    cli(main)()
