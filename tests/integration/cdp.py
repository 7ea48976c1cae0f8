"""A minimal Chrome DevTools Protocol client for the browser tests.

It starts Debian's headless Chromium (/usr/bin/chromium, installed by
scripts/setup.sh; no Playwright and no browser download) and talks to it over
the DevTools WebSocket with python3-websockets.  Each `Page` lives in its own
browser context (its own cookies and storage), like a separate browser
session.  Everything waits by polling with a deadline, never a fixed sleep.
Pages served over TLS by the stack's dev CA are trusted by pinning the
server certificate's public key (`trust_spki`), not by ignoring every
certificate error.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import websockets

CHROMIUM = os.environ.get("MINICHAT_CHROMIUM", "/usr/bin/chromium")


class CDPError(Exception):
    pass


class Browser:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, ports=(), trust_spki=None):
        # Chromium refuses some ports outright (net::ERR_UNSAFE_PORT: 10080,
        # node a's port with MINICHAT_PORT_OFFSET=2000, is one); the pages'
        # ports are allowed explicitly
        self.ports = tuple(ports)
        # base64 SHA-256 of a server's SubjectPublicKeyInfo whose certificate
        # Chromium accepts although no authority it knows signed it
        self.trust_spki = trust_spki
        self.proc = None
        self.profile = None
        self.ws = None
        self.reader = None
        self.next_id = 0
        self.calls = {}          # id -> future
        self.pages = {}          # sessionId -> Page
        self.log_path = None

    async def start(self, timeout=30.0):
        if not os.access(CHROMIUM, os.X_OK):
            raise CDPError("%s not found; run scripts/setup.sh (it installs Debian's chromium)" % CHROMIUM)
        self.profile = tempfile.mkdtemp(prefix="minichat-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        args = [CHROMIUM, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--disable-dev-shm-usage",
                "--password-store=basic", "--use-mock-keychain",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                "--user-data-dir=" + self.profile, "--window-size=1200,800"]
        if self.ports:
            args.append("--explicitly-allowed-ports=" + ",".join(str(p) for p in self.ports))
        if self.trust_spki:
            args.append("--ignore-certificate-errors-spki-list=" + self.trust_spki)
        args.append("about:blank")
        if os.geteuid() == 0 or os.environ.get("MINICHAT_CHROMIUM_NO_SANDBOX"):
            args.insert(1, "--no-sandbox")     # Chromium refuses to run as root with its sandbox
        with open(self.log_path, "wb") as log:
            # Its own process group: close() ends exactly the processes it started.
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CDPError("chromium exited with %s: %s" % (self.proc.returncode, self.log_tail()))
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise CDPError("chromium wrote no DevToolsActivePort within %.0fs: %s" % (timeout, self.log_tail()))
            await asyncio.sleep(0.05)
        url = "ws://127.0.0.1:%s%s" % (lines[0].strip(), lines[1].strip())
        self.ws = await websockets.connect(url, max_size=2**26, open_timeout=timeout, ping_interval=None)
        self.reader = asyncio.create_task(self._read())
        return self

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self.calls.pop(msg["id"], None)
                    if fut and not fut.done():
                        if "error" in msg:
                            fut.set_exception(CDPError("%s" % (msg["error"],)))
                        else:
                            fut.set_result(msg.get("result", {}))
                else:
                    page = self.pages.get(msg.get("sessionId"))
                    if page is not None:
                        page.on_event(msg["method"], msg.get("params", {}))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            for fut in self.calls.values():
                if not fut.done():
                    fut.set_exception(CDPError("DevTools connection closed"))
            self.calls.clear()

    async def call(self, method, params=None, session=None, timeout=30.0):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.calls[self.next_id] = fut
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def new_page(self, name="page"):
        """A tab in a fresh browser context (separate storage: another session)."""
        ctx = (await self.call("Target.createBrowserContext", {"disposeOnDetach": True}))["browserContextId"]
        target = (await self.call("Target.createTarget", {"url": "about:blank", "browserContextId": ctx}))["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, name, ctx, target, session)
        self.pages[session] = page
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        # WebSocket handshakes and frames as the browser saw them
        # (Network.webSocketCreated, ...HandshakeResponseReceived, ...Frame*)
        await page.call("Network.enable")
        # Headless tabs are never focused; the page sends `read` only while
        # focused, as a person looking at it would.
        await page.call("Emulation.setFocusEmulationEnabled", {"enabled": True})
        return page

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.call("Browser.close", timeout=5), 6)
            except Exception:  # noqa: BLE001 - it may already be gone
                pass
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            # Helpers (zygote, renderers) share the group; none may outlive the test.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigation, JavaScript evaluation, real keyboard and mouse input."""

    def __init__(self, browser, name, ctx, target, session):
        self.browser = browser
        self.name = name
        self.ctx = ctx
        self.target = target
        self.session = session
        self.exceptions = []     # uncaught exceptions in the page
        self.console = []        # console messages (type, text)
        self.websockets = []     # (method, params) of the Network domain's webSocket* events

    def on_event(self, method, params):
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.exceptions.append((d.get("exception") or {}).get("description") or d.get("text"))
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append((params.get("type"), text))
        elif method.startswith("Network.webSocket"):
            self.websockets.append((method, params))

    def call(self, method, params=None, timeout=30.0):
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    async def eval(self, expr):
        """Evaluate a JavaScript expression (awaiting promises); its JSON value."""
        r = await self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError("%s: %s in %s" % (self.name, (d.get("exception") or {}).get("description") or d.get("text"),
                                              expr))
        return r.get("result", {}).get("value")

    async def wait_for(self, expr, timeout=20.0, what=None):
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = await self.eval(expr)
                if last:
                    return last
            except CDPError as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError("%s: timed out after %.0fs waiting for %s (last: %r); errors shown: %r; "
                                     "page exceptions: %r"
                                     % (self.name, timeout, what or expr, last, await self.shown_errors(),
                                        self.exceptions))
            await asyncio.sleep(0.05)

    def websocket_events(self, method, url_part=""):
        """The params of this page's `method` events (e.g.
        "Network.webSocketHandshakeResponseReceived") of WebSockets whose
        URL contains url_part, in order."""
        urls = {p["requestId"]: p["url"] for m, p in self.websockets if m == "Network.webSocketCreated"}
        return [p for m, p in self.websockets if m == method and url_part in urls.get(p.get("requestId"), "")]

    async def shown_errors(self):
        try:
            return await self.eval("[...document.querySelectorAll('#errors > div')].map(e => e.className + ': ' "
                                   "+ e.firstChild.textContent)")
        except Exception:  # noqa: BLE001
            return None

    async def goto(self, url, timeout=20.0):
        await self.call("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete' && location.href === %s" % json.dumps(url),
                            timeout, "page load of " + url)

    async def click(self, selector, timeout=20.0):
        """A real mouse click in the middle of the element (scrolled into view)."""
        sel = json.dumps(selector)
        box = await self.wait_for(
            "(() => { const e = document.querySelector(%s); if (!e || e.disabled) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return r.width > 0 && r.height > 0 ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()" % sel,
            timeout, "a clickable " + selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"],
                                                         "button": "left", "clickCount": 1})

    async def type_into(self, selector, text):
        """Focus a field by clicking it and type text as keyboard input."""
        await self.click(selector)
        await self.call("Input.insertText", {"text": text})

    async def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                      "nativeVirtualKeyCode": 13}
            if kind == "keyDown":
                params["text"] = "\r"
            await self.call("Input.dispatchKeyEvent", params)

    async def close(self):
        try:
            await self.browser.call("Target.closeTarget", {"targetId": self.target}, timeout=10)
            await self.browser.call("Target.disposeBrowserContext", {"browserContextId": self.ctx}, timeout=10)
        except Exception:  # noqa: BLE001 - best effort
            pass
        self.browser.pages.pop(self.session, None)
