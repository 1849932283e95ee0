"""A small headless-Chromium driver over the DevTools protocol on a pipe: no extra package, no port.

Used by the browser tests (MLflow UI, review page). Commands go to fd 3 and replies come from fd 4 as
NUL-separated JSON; events that arrive meanwhile are kept in `events` so a test can check, e.g., that
a page made no network request.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Every host name unresolvable and a proxy that refuses: a page that reaches for the network fails.
NO_NETWORK = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")
KEY_CODES = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Enter": 13, "Escape": 27}


class Chromium:
    """Headless Chromium driven over the DevTools protocol through --remote-debugging-pipe."""

    def __init__(self, profile: Path, width: int, height: int, *args: str):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipes_on_fd_3_and_4() -> None:
            # dup first: dup2 onto the same number would keep close-on-exec.
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", *args, "--remote-debugging-pipe",
             "about:blank"],
            preexec_fn=pipes_on_fd_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._last_id, self._session = b"", 0, None
        self.events: list[dict] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, **params) -> dict:
        """A command to the attached page (before attaching, and for Browser.*, to the browser)."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if self._session and not method.startswith("Browser."):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next_message()
            if reply.get("id") == self._last_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def _next_message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            assert chunk, "chromium closed the DevTools pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll a JS expression until it is truthy: the UI renders after its API calls return."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {expression}\npage text:\n{self.js('document.body.innerText')}")

    def open(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(ready)

    def run_before_page_scripts(self, source: str) -> None:
        """Run `source` in every document opened from now on, before the page's own scripts (and outside
        its Content-Security-Policy): e.g. a recorder of timestamps on the page's clock."""
        self.call("Page.enable")  # without it, the script is registered but never runs
        self.call("Page.addScriptToEvaluateOnNewDocument", source=source)

    def click(self, selector: str, text: str | None = None) -> None:
        """A real mouse click at the centre of the first visible match (with `text`, exactly that text)."""
        centre = self.wait_for(f"""(() => {{
            const el = [...document.querySelectorAll({json.dumps(selector)})].find(e =>
                e.getBoundingClientRect().width > 0 && ({json.dumps(text)} === null || e.innerText.trim() === {json.dumps(text)}));
            if (!el) return null;
            el.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""", timeout=20)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=centre[0], y=centre[1], button="left", clickCount=1)

    def press(self, key: str) -> None:
        """A real key press (a character such as "d" or "2", or a name such as "ArrowRight")."""
        if key in KEY_CODES:
            down = {"key": key, "code": key, "windowsVirtualKeyCode": KEY_CODES[key]}
        else:
            code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
            down = {"key": key, "code": code, "text": key, "windowsVirtualKeyCode": ord(key.upper())}
        self.call("Input.dispatchKeyEvent", type="keyDown", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in down.items() if k != "text"})

    def press_escape(self) -> None:
        self.press("Escape")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an <input type=file> as a person would (fires its change event)."""
        element = self.call("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.call("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=element["result"]["objectId"])

    def allow_downloads(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def wait_for_file(path: Path, timeout: float = 30.0) -> Path:
    """A download, once Chromium has renamed it from its .crdownload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path
        time.sleep(0.1)
    raise AssertionError(f"{path.name} was not downloaded in {timeout} s; {path.parent} holds "
                         f"{sorted(p.name for p in path.parent.iterdir())}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
