"""Open a page in a real headless Chromium (Debian's ``chromium``) and see what a reader sees.

``open_page`` starts Chromium with a DevTools pipe-free websocket endpoint, loads the page, waits
for it, and returns what happened: console errors and uncaught exceptions, every image with whether
it loaded, JavaScript ``alert`` dialogs opened, and a PNG screenshot. It speaks the DevTools
protocol directly over ``websockets`` (already installed with Prefect).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PageVisit:
    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # {"src": ..., "loaded": bool}
    dialogs: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    title: str = ""
    text: str = ""

    @property
    def broken_images(self) -> list[str]:
        return [i["src"][:80] for i in self.images if not i["loaded"]]

    def blank(self) -> bool:
        """Whether the screenshot is one flat colour."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.screenshot)).convert("L")
        low, high = image.getextrema()
        return high - low < 10


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(path: Path, *, width: int = 1200, height: int = 1600, timeout: float = 60.0) -> PageVisit:
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("chromium did not start its DevTools endpoint")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            return asyncio.run(asyncio.wait_for(_visit(port, Path(path).resolve().as_uri(), width, height), timeout))
        finally:  # the browser and every helper process it started (they write to the profile until gone)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


async def _visit(port: int, url: str, width: int, height: int) -> PageVisit:
    import urllib.request

    import websockets

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:  # noqa: S310 - local
        targets = json.load(response)
    page = next(t for t in targets if t.get("type") == "page")
    visit = PageVisit()
    ids = itertools.count(1)
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20) as ws:
        pending: dict[int, asyncio.Future] = {}
        loaded = asyncio.Event()

        async def reader() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if "id" in message and message["id"] in pending:
                    pending.pop(message["id"]).set_result(message)
                    continue
                method, params = message.get("method"), message.get("params", {})
                if method == "Runtime.exceptionThrown":
                    details = params["exceptionDetails"]
                    visit.console_errors.append(details.get("exception", {}).get("description") or details["text"])
                elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    visit.console_errors.append(" ".join(str(a.get("value", a.get("description")))
                                                         for a in params.get("args", [])))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    visit.console_errors.append(params["entry"].get("text", ""))
                elif method == "Page.javascriptDialogOpening":
                    visit.dialogs.append(params.get("message", ""))
                    asyncio.ensure_future(call("Page.handleJavaScriptDialog", accept=True))
                elif method == "Page.loadEventFired":
                    loaded.set()

        async def call(method: str, **params: Any) -> dict[str, Any]:
            number = next(ids)
            future = asyncio.get_running_loop().create_future()
            pending[number] = future
            await ws.send(json.dumps({"id": number, "method": method, "params": params}))
            reply = await future
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})

        task = asyncio.create_task(reader())
        for domain in ("Page", "Runtime", "Log"):
            await call(f"{domain}.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
        await call("Page.navigate", url=url)
        await loaded.wait()
        await asyncio.sleep(0.3)  # let late image decodes and scripts finish
        images = await call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => ({src: i.currentSrc || i.src, "
            "loaded: i.complete && i.naturalWidth > 0}))"))
        visit.images = images["result"]["value"]
        info = await call("Runtime.evaluate", returnByValue=True,
                          expression="({title: document.title, text: document.body.innerText})")
        visit.title, visit.text = info["result"]["value"]["title"], info["result"]["value"]["text"]
        shot = await call("Page.captureScreenshot", format="png")
        visit.screenshot = base64.b64decode(shot["data"])
        task.cancel()
    return visit
