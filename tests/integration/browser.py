"""Headless Chromium for the browser tests: the command line that walls it off from the network, and a
small Chrome DevTools Protocol client to drive a page (click, type, keys), read it back, emulate a
phone's width or a dark scheme, take screenshots, and see every request the page made.

Every host but 127.0.0.1 resolves to nothing and every other request goes to a dead proxy, so a page
that needed a CDN would break. The DevTools client speaks the protocol over the ``websockets``
package's synchronous client (uvicorn[standard] brings it in). Skips cleanly where Debian's chromium
is not installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import processes

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-extensions", "--disable-background-networking",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


class BrowserError(RuntimeError):
    pass


class Page:
    """One Chromium tab under DevTools control; ``requests`` holds every request it made, ``errors`` every
    console error, uncaught exception or failed load (a Content-Security-Policy refusal among them)."""

    def __init__(self):
        sync_client = pytest.importorskip("websockets.sync.client")
        # Chromium's helper processes may still be writing to the profile as it is removed.
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.process = subprocess.Popen(
            [chromium(), *OFFLINE_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={self.profile.name}",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = self._devtools_endpoint()
        # Entered by hand (left in close()) because the connection outlives this method.
        self._connection = sync_client.connect(endpoint, max_size=None, open_timeout=30)
        self.socket = self._connection.__enter__()
        self.next_id = 0
        self.events: list[dict] = []
        self.requests: list[dict] = []  # {url, method, headers} of every request the page made
        self.errors: list[str] = []
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")

    def _devtools_endpoint(self) -> str:
        # Chromium prints "DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>" on stderr.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                return found.group(1)
            if not line and self.process.poll() is not None:
                break
        self.close()
        raise BrowserError("chromium did not start its DevTools endpoint")

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self._connection.__exit__(None, None, None)
        processes.stop(self.process)
        self.profile.cleanup()

    # ---- the protocol ----

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=120))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def _note(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            request = params["request"]
            self.requests.append({"url": request["url"], "method": request["method"], "headers": request["headers"]})
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:2000])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(json.dumps(params["args"])[:2000])

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited when it is a promise), as JSON brings it back."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:200]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll until the expression is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout} s: {expression}")
            time.sleep(0.1)

    # ---- what a person does ----

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && document.body.dataset.ready === 'true'")

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(self, selector: str, text: str) -> None:
        """Set a field's value the way typing does: the value, then an input event."""
        self.evaluate(f"(() => {{ const field = document.querySelector({json.dumps(selector)}); "
                      f"field.value = {json.dumps(text)}; "
                      "field.dispatchEvent(new Event('input', {bubbles: true})); })()")

    KEYS = {"Tab": 9, "Enter": 13, "ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38, " ": 32}

    def press(self, key: str, *, ctrl: bool = False, shift: bool = False) -> None:
        """A real key press through the browser's input pipeline (focus moves, buttons activate)."""
        code = self.KEYS[key]
        modifiers = (2 if ctrl else 0) | (8 if shift else 0)
        text = "\r" if key == "Enter" else " " if key == " " else ""
        common = {"key": key, "code": "Space" if key == " " else key, "windowsVirtualKeyCode": code,
                  "nativeVirtualKeyCode": code, "modifiers": modifiers}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown" if text else "rawKeyDown", "text": text, **common})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **common})

    def emulate(self, width: int, height: int = 900, *, dark: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": width < 600})
        self.send("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})

    def screenshot(self, name: str) -> Path:
        """The whole page as test-artifacts/<name>.png."""
        ARTIFACTS.mkdir(exist_ok=True)
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        target = ARTIFACTS / f"{name}.png"
        target.write_bytes(base64.b64decode(shot["data"]))
        return target
