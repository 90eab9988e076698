#!/usr/bin/env python3
"""The operator console in a real browser: headless Chromium, driven over the Chrome
DevTools protocol.

    python3 tests/browser/console_check.py PATH_TO_READERD [--screenshot docs/console.png]

Starts `readerd demo` on a free loopback port (an emulated Stripe whose simulated customers
tap a card by themselves, a daemon, two merchants sharing two readers), opens
`/console` in headless Chromium and uses it the way an operator would: signs in with the
form, watches a payment go from queued to succeeded without reloading, refunds one,
captures and cancels others with the confirmation dialog, filters the list, signs out,
and signs in again as a merchant's till through `#token=…` to see only that merchant's
payments. Any script error or policy violation in the page fails the check.

Chromium comes from the system (Debian's `chromium` package; set READERD_CHROMIUM to use
another binary). Python 3 standard library only: the DevTools protocol is JSON over a
WebSocket, and the small client below is all it needs. Prints one line per check and
ends with `N passed, M failed`; exits 1 when anything failed. Every wait is bounded.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

RUN_BUDGET = 90.0  # seconds for the whole run
STARTED = time.monotonic()
PASSED = 0
FAILED = 0


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"PASS {name}", flush=True)
    else:
        FAILED += 1
        extra = f": {detail}" if detail else ""
        print(f"FAIL {name}{extra}", flush=True)
    return bool(ok)


def budget_left():
    return RUN_BUDGET - (time.monotonic() - STARTED)


# ---- Chromium ---------------------------------------------------------------------------

def find_chromium():
    for candidate in [os.environ.get("READERD_CHROMIUM"), "/usr/bin/chromium", "chromium",
                      "chromium-browser", "google-chrome", "google-chrome-stable"]:
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


class WebSocket:
    """A minimal RFC 6455 client: text frames out (masked), text frames in."""

    def __init__(self, url):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise ValueError(f"not a ws:// URL: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send(self, text):
        self._frame(0x1, text.encode())

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)  # the server does not mask
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Page:
    """One browser tab over the DevTools protocol."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait(self, expression, timeout=10.0, what=None):
        """Polls `expression` until it is truthy; its last value (falsy on timeout)."""
        deadline = time.monotonic() + min(timeout, max(budget_left(), 0.5))
        value = None
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.05)
        return value

    def goto(self, url):
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", 10)

    def click(self, selector):
        """A real mouse click at the middle of the element (so modals and focus behave)."""
        box = self.eval(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: 'center'}});
            const r = e.getBoundingClientRect();
            return {{x: r.x + r.width / 2, y: r.y + r.height / 2}};
        }})()""")
        if not box:
            raise RuntimeError(f"nothing to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                      button="left", clickCount=1)

    def type_into(self, selector, text):
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                  " e.focus(); e.select && e.select(); })()")
        self.call("Input.insertText", text=text)

    def problems(self):
        """Script errors and policy violations the page reported (network 4xx are the
        API's answers, such as 403 on the admin-only merchant list for a till)."""
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                out.append(e["params"]["exceptionDetails"].get("text", "exception"))
            elif e["method"] == "Log.entryAdded":
                entry = e["params"]["entry"]
                if entry.get("level") == "error" and entry.get("source") != "network":
                    out.append(f"{entry.get('source')}: {entry.get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                out.append("console.error")
        return out


def launch(chromium, profile):
    args = [chromium, "--headless=new", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
            "--remote-allow-origins=*", f"--user-data-dir={profile}",
            "--window-size=1280,900", "about:blank"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if os.path.exists(port_file):
            lines = open(port_file).read().split()
            if lines:
                port = int(lines[0])
                targets = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/json/list", timeout=5).read())
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return proc, pages[0]["webSocketDebuggerUrl"]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{chromium} did not open its DevTools port")


# ---- readerd ----------------------------------------------------------------------------

def start_demo(readerd, tap_after):
    proc = subprocess.Popen([readerd, "demo", "--listen", "127.0.0.1:0", "--tap-after", tap_after],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    info = {"pos": {}, "readers": {}}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.match(r"\s+API\s+(\S+)", line):
            info["api"] = m.group(1)
        elif m := re.match(r"\s+admin token\s+(\S+)", line):
            info["admin"] = m.group(1)
        elif m := re.match(r"\s+pos token\s+(\S+)\s+\(merchant (\w+)\)", line):
            info["pos"][m.group(2)] = m.group(1)
        elif m := re.match(r"\s+reader\s+(\S+)\s+(tmr_\S+)", line):
            info["readers"][m.group(1)] = m.group(2)
        elif line.startswith("Try"):
            if "api" in info and len(info["readers"]) >= 2:
                return proc, info
    proc.kill()
    raise RuntimeError(f"readerd demo did not start: {info}")


def api(info, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(info["api"] + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
        req.add_header("Idempotency-Key", str(uuid.uuid4()))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def pay(info, merchant, reader, amount, capture="automatic"):
    status, p = api(info, "POST", "/v1/payments", info["pos"][merchant],
                    {"merchant": merchant, "reader": reader, "amount": amount,
                     "currency": "eur", "capture": capture})
    if status != 201:
        raise RuntimeError(f"payment not accepted: {status} {p}")
    return p["id"]


def row(pid, attr="data-status"):
    """An expression: the attribute of the payment's row in the list (null without one)."""
    return (f"(document.querySelector('tr[data-payment-id=\"{pid}\"]')"
            f"?.getAttribute('{attr}') ?? null)")


# ---- the check --------------------------------------------------------------------------

def take_screenshot(page, info, path):
    """The console at work: one reader taking a payment with another queued behind it."""
    till1 = info["readers"]["till-1"]
    pay(info, "bakery", till1, 1890)
    pay(info, "florist", till1, 675)
    page.wait(f"!!document.querySelector('[data-reader-id=\"{till1}\"] .pill.busy')"
              f" && !!document.querySelector('[data-reader-id=\"{till1}\"] [data-queue=\"1\"]')",
              10)
    page.call("Emulation.setDeviceMetricsOverride", width=1280, height=800,
              deviceScaleFactor=1, mobile=False)
    page.eval("document.getElementById('notice').hidden = true")
    time.sleep(1.3)  # let the new rows' highlight fade
    shot = page.call("Page.captureScreenshot", format="png")
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    page.call("Emulation.clearDeviceMetricsOverride")
    print(f"screenshot: {path} ({os.path.getsize(path)} bytes)", flush=True)


def run(page, info, screenshot):
    base = info["api"] + "/console"
    admin, bakery, florist = info["admin"], info["pos"]["bakery"], info["pos"]["florist"]

    print("== sign in with the form", flush=True)
    page.goto(base)
    check("the sign-in form shows without a token",
          page.wait("!document.getElementById('sign-in').hidden"))
    page.type_into("#token", admin)
    page.click("#sign-in-form button[type=submit]")
    check("signed in as admin", page.wait("document.getElementById('who').textContent === 'admin'"))
    check("the live stream is connected",
          page.wait("document.getElementById('live').dataset.live === 'true'"))
    labels = page.wait("(() => { const l = [...document.querySelectorAll('.reader h3')]"
                       ".map(e => e.textContent); return l.length >= 2 ? l : null; })()")
    check("the readers grid shows both readers", labels == ["till-1", "till-2"], repr(labels))
    check("the token is in sessionStorage only",
          page.eval(f"sessionStorage.getItem('readerd.token') === {json.dumps(admin)}"
                    " && localStorage.length === 0 && !location.href.includes('token')"))
    page.eval("window.sameDocument = true")

    print("== a payment goes from queued to succeeded, live", flush=True)
    till1, till2 = info["readers"]["till-1"], info["readers"]["till-2"]
    first = pay(info, "bakery", till1, 1250)
    second = pay(info, "bakery", till1, 2000)  # waits behind the first
    held = pay(info, "florist", till2, 4200, capture="manual")
    declined = pay(info, "bakery", till2, 1005)  # the test network declines ...05
    seen, queue_seen = [], False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and budget_left() > 5:
        status = page.eval(row(second))
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == "queued" and not queue_seen:
            queue_seen = bool(page.eval(
                f"!!document.querySelector('[data-reader-id=\"{till1}\"] [data-queue=\"1\"]')"))
        if status == "succeeded":
            break
        time.sleep(0.05)
    check("the second payment was shown queued, then succeeded",
          seen[:1] == ["queued"] and seen[-1:] == ["succeeded"], repr(seen))
    check("the reader showed one payment in its queue meanwhile", queue_seen)
    check("without reloading the page", page.eval("window.sameDocument === true"))
    check("amounts are money", page.wait(
        f"document.querySelector('tr[data-payment-id=\"{second}\"] td.num')"
        ".textContent.startsWith('20.00 EUR')"))
    check("the authorised and the declined payments arrive too",
          page.wait(f"{row(held)} === 'requires_capture' && {row(declined)} === 'declined'", 20),
          f"{page.eval(row(held))} {page.eval(row(declined))}")
    page.wait(f"{row(first)} === 'succeeded'", 10)

    print("== refund, capture and cancel, each confirmed", flush=True)
    page.click(f"tr[data-payment-id=\"{second}\"] button[data-action=refund]")
    check("the refund asks for confirmation with the amount left",
          page.wait("document.getElementById('confirm').open && "
                    "document.getElementById('confirm-input').value === '20.00'"))
    page.click("#confirm-ok")
    check("the refund shows in the list", page.wait(
        f"document.querySelector('tr[data-payment-id=\"{second}\"] td[data-refunded]')"
        "?.dataset.refunded === '2000'"))
    status, p = api(info, "GET", f"/v1/payments/{second}", admin)
    check("the daemon refunded it", p.get("amount_refunded") == 2000, repr(p))

    page.click(f"tr[data-payment-id=\"{held}\"] button[data-action=capture]")
    page.wait("document.getElementById('confirm').open")
    page.click("#confirm-ok")
    check("a capture from the console succeeds", page.wait(f"{row(held)} === 'succeeded'", 15))

    page.click(f"tr[data-payment-id=\"{declined}\"] button[data-action=cancel]")
    page.wait("document.getElementById('confirm').open")
    page.click("#confirm-cancel")
    check("Back leaves the payment alone",
          page.wait("!document.getElementById('confirm').open") and
          api(info, "GET", f"/v1/payments/{declined}", admin)[1].get("status") == "declined")
    page.click(f"tr[data-payment-id=\"{declined}\"] button[data-action=cancel]")
    page.wait("document.getElementById('confirm').open")
    page.click("#confirm-ok")
    check("a cancel from the console ends the declined payment",
          page.wait(f"{row(declined)} === 'canceled'", 15))

    print("== filters", flush=True)
    page.eval("(() => { const s = document.getElementById('filter-merchant');"
              " s.value = 'florist'; s.dispatchEvent(new Event('change')); })()")
    merchants = page.wait("(() => { const r = [...document.querySelectorAll('#payments tr')]"
                          ".map(t => t.children[2].textContent);"
                          " return r.length && r.every(m => m === 'florist') ? r : null; })()")
    check("the merchant filter shows that merchant only", merchants == ["florist"],
          repr(merchants))
    page.eval("(() => { const s = document.getElementById('filter-merchant');"
              " s.value = ''; s.dispatchEvent(new Event('change')); })()")
    check("all payments again", page.wait(
        "document.querySelectorAll('#payments tr').length === 4"))

    if screenshot:
        take_screenshot(page, info, screenshot)

    print("== sign out, then a till signs in through the fragment", flush=True)
    page.click("#sign-out")
    check("signed out: the token is gone", page.wait(
        "!document.getElementById('sign-in').hidden && "
        "sessionStorage.getItem('readerd.token') === null"))
    page.goto(base + "#token=" + florist)
    check("signed in as a till", page.wait(
        "document.getElementById('who').textContent === 'pos'"))
    check("the token left the address bar", page.eval("location.hash === ''"))
    page.wait(f"!!document.querySelector('tr[data-payment-id=\"{held}\"]')")
    ids = page.eval("[...document.querySelectorAll('#payments tr')]"
                    ".map(t => t.dataset.paymentId)")
    merchants = page.eval("[...document.querySelectorAll('#payments tr')]"
                          ".map(t => t.children[2].textContent)")
    check("the florist's till sees the florist's payments only",
          held in ids and set(merchants) == {"florist"}
          and not {first, second, declined} & set(ids), repr(list(zip(ids, merchants))))
    check("and no force-clear", page.eval(
        "document.querySelectorAll('[data-action=clear]').length === 0"))
    problems = page.problems()
    check("no script error or policy violation in the page", not problems, repr(problems))


def main():
    args = sys.argv[1:]
    screenshot = None
    if "--screenshot" in args:
        i = args.index("--screenshot")
        screenshot = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 64
    readerd = os.path.abspath(args[0])
    chromium = find_chromium()
    if not chromium:
        check("chromium is installed", False,
              "install it with `apt-get install -y chromium` (Debian) or set READERD_CHROMIUM")
        print(f"{PASSED} passed, {FAILED} failed")
        return 1
    profile = tempfile.mkdtemp(prefix="readerd-console-check-")
    demo = browser = page = None
    try:
        # The screenshot wants a customer slower to tap, to catch a reader at work.
        demo, info = start_demo(readerd, "4s" if screenshot else "1s")
        browser, ws_url = launch(chromium, profile)
        page = Page(ws_url)
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        run(page, info, screenshot)
    except Exception as e:  # a broken run is one failed check, with what broke
        check("the run completes", False, f"{type(e).__name__}: {e}")
    finally:
        if page:
            page.ws.close()
        for proc in (browser, demo):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM if proc is browser else signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{PASSED} passed, {FAILED} failed ({time.monotonic() - STARTED:.1f} s)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
