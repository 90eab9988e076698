#!/usr/bin/env python3
"""Acceptance check of readerd against its published contract and Stripe's documented API.

Knows only readerd's external contract (commands, config, HTTP API, statuses, as
docs/API.md and docs/OPERATIONS.md describe them) and Stripe's documentation (endpoints,
form encoding, auth, error envelopes, test helpers, test cards). Builds nothing:

    python3 tests/acceptance/contract_check.py PATH_TO_READERD

Starts `readerd sim` on a free loopback port, drives the emulator alone the way Stripe's
server-driven docs do, then starts `readerd run` against it with a config written per the
contract and drives the daemon's HTTP API (fleet, scopes, payments, a kill -9 mid-payment)
and counts PaymentIntents on the emulator. Prints one line per check and ends with
`N passed, M failed`; exits 1 when anything failed. Every wait is bounded.

Python 3 standard library only.
"""

import base64
import hashlib
import hmac
import http.client
import re
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SK = "sk_test_acceptance_0123456789"
WHSEC = "whsec_acceptance_secret_0123456789"
TOKENS = {"admin": "admin-token-" + "a" * 20, "pos": "pos-bakery-" + "b" * 20,
          "pos2": "pos-cafe-" + "c" * 20}


def tokens_admin():
    return TOKENS["admin"]
HTTP_TIMEOUT = 10.0
RUN_BUDGET = 110.0  # seconds for the whole run

STARTED = time.monotonic()
PASSED = 0
FAILED = 0
FAILURES = []


def check(name, ok, detail=""):
    """Records and prints one check."""
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"PASS {name}", flush=True)
    else:
        FAILED += 1
        FAILURES.append(name)
        extra = f": {detail}" if detail else ""
        print(f"FAIL {name}{extra}", flush=True)
    return bool(ok)


def short(value, limit=300):
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.json = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            self.json = None

    def err_code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("code")
        return None

    def err_type(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("type")
        return None

    def get(self, key, default=None):
        if isinstance(self.json, dict):
            return self.json.get(key, default)
        return default

    def __repr__(self):
        return f"HTTP {self.status} {short(self.raw.decode('utf-8', 'replace'))}"


def request(method, url, headers=None, body=None, timeout=HTTP_TIMEOUT):
    """One HTTP request; never raises for HTTP statuses. Connection errors give status 0."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())
    except (urllib.error.URLError, OSError) as e:
        return Resp(0, {}, str(e).encode())


class Stripe:
    """A raw, curl-like Stripe client: form bodies, bracket notation, Bearer auth."""

    def __init__(self, base, key=SK):
        self.base = base
        self.key = key

    def call(self, method, path, params=None, account=None, idem=None, auth="bearer", key=None):
        key = self.key if key is None else key
        headers = {}
        if auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif auth == "basic":
            token = base64.b64encode(f"{key}:".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if account:
            headers["Stripe-Account"] = account
        if idem:
            headers["Idempotency-Key"] = idem
        encoded = urllib.parse.urlencode(params or [], doseq=False)
        url = self.base + path
        body = None
        if method == "GET":
            if encoded:
                url += "?" + encoded
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = encoded.encode()
        return request(method, url, headers, body)

    def list_all(self, path, account=None, params=None):
        """Every object of a list endpoint, following has_more/starting_after."""
        out = []
        after = None
        for _ in range(100):
            p = list(params or []) + [("limit", "100")]
            if after:
                p.append(("starting_after", after))
            r = self.call("GET", path, p, account=account)
            if r.status != 200 or not isinstance(r.json, dict):
                raise RuntimeError(f"list {path}: {r}")
            data = r.json.get("data", [])
            out.extend(data)
            if not r.json.get("has_more") or not data:
                return out
            after = data[-1]["id"]
        return out


class Api:
    """The daemon's JSON API."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, token=None, body=None, idem=None, timeout=HTTP_TIMEOUT):
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if idem:
            headers["Idempotency-Key"] = idem
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(method, self.base + path, headers, data, timeout=timeout)


def wait_until(fn, timeout, interval=0.1):
    """Polls fn until it returns a truthy value or the timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


def stop(proc, sig=signal.SIGTERM, timeout=15):
    """Signals a child and waits for it (bounded); returns its exit code or None."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return None


# ---------------------------------------------------------------------------------------
# The emulator alone, as Stripe documents the server-driven flow
# ---------------------------------------------------------------------------------------


def emulator_section(s, sim_base):
    print("== emulator: auth, envelopes, request ids", flush=True)
    r = s.call("GET", "/v1/terminal/locations", auth=None)
    check("no key is 401", r.status == 401, repr(r))
    check("401 has Stripe's error envelope", isinstance(r.get("error"), dict)
          and "message" in r.get("error", {}) and "type" in r.get("error", {}), repr(r))
    r = s.call("GET", "/v1/terminal/locations", key="not_a_key")
    check("malformed key is 401", r.status == 401, repr(r))
    r = s.call("GET", "/v1/terminal/locations", auth="basic")
    check("Basic auth with the key as user (curl -u sk_test_x:) is accepted", r.status == 200, repr(r))
    rid = r.headers.get("Request-Id", "") if r.headers else ""
    check("Request-Id header req_…", rid.startswith("req_"), f"Request-Id={rid!r}")
    check("list object shape", r.get("object") == "list" and isinstance(r.get("data"), list)
          and "has_more" in (r.json or {}) and "url" in (r.json or {}), repr(r))
    r404 = s.call("GET", "/v1/terminal/locations/tml_doesnotexist")
    check("unknown object is 404 resource_missing", r404.status == 404
          and r404.err_code() == "resource_missing"
          and r404.err_type() == "invalid_request_error", repr(r404))
    check("error responses carry Request-Id too",
          (r404.headers.get("Request-Id", "") if r404.headers else "").startswith("req_"))

    print("== emulator: connected accounts", flush=True)
    r = s.call("POST", "/v1/accounts", [
        ("type", "custom"), ("country", "DE"), ("email", "owner@example.com"),
        ("capabilities[card_payments][requested]", "true"),
        ("capabilities[transfers][requested]", "true"),
    ])
    check("POST /v1/accounts with capabilities[card_payments][requested]=true",
          r.status == 200 and str(r.get("id", "")).startswith("acct_"), repr(r))
    acct = r.get("id")
    caps = r.get("capabilities") or {}
    check("requested card_payments is active", caps.get("card_payments") == "active", repr(r))
    check("account country as created", r.get("country") == "DE", repr(r))
    r = s.call("GET", f"/v1/accounts/{acct}")
    check("GET /v1/accounts/{id}", r.status == 200 and r.get("id") == acct, repr(r))
    r = s.call("GET", f"/v1/accounts/{acct}/capabilities/card_payments")
    check("GET /v1/accounts/{id}/capabilities/card_payments is a Capability",
          r.status == 200 and r.get("object") == "capability" and r.get("status") == "active"
          and r.get("requested") is True and r.get("account") == acct, repr(r))
    bare = s.call("POST", "/v1/accounts", [("type", "custom"), ("country", "DE")]).get("id")
    r = s.call("GET", f"/v1/accounts/{bare}/capabilities/card_payments")
    check("a capability never requested is unrequested", r.status == 200
          and r.get("status") == "unrequested", repr(r))
    r = s.call("GET", f"/v1/accounts/{bare}")
    check("and the account without card_payments cannot charge",
          r.get("charges_enabled") is False
          and (r.get("capabilities") or {}).get("card_payments") != "active", repr(r))
    r = s.call("GET", "/v1/accounts/acct_doesnotexist")
    check("unknown account is 404 resource_missing", r.status == 404
          and r.err_code() == "resource_missing", repr(r))

    print("== emulator: locations, readers, pagination", flush=True)
    address = [("address[line1]", "Hauptstr. 1"), ("address[city]", "Berlin"),
               ("address[postal_code]", "10115"), ("address[country]", "DE")]
    loc_ids = []
    for i in range(3):
        r = s.call("POST", "/v1/terminal/locations", [("display_name", f"Shop {i}")] + address
                   + [("metadata[n]", str(i))])
        if r.status == 200:
            loc_ids.append(r.get("id"))
    check("create 3 locations (platform, no Stripe-Account)", len(loc_ids) == 3
          and all(str(x).startswith("tml_") for x in loc_ids), repr(r))
    r = s.call("GET", f"/v1/terminal/locations/{loc_ids[0]}")
    check("location object", r.status == 200 and r.get("object") == "terminal.location"
          and (r.get("address") or {}).get("country") == "DE"
          and (r.get("metadata") or {}).get("n") == "0", repr(r))
    p1 = s.call("GET", "/v1/terminal/locations", [("limit", "2")])
    ok = p1.status == 200 and len(p1.get("data") or []) == 2 and p1.get("has_more") is True
    check("list limit=2 gives 2 and has_more", ok, repr(p1))
    seen = [o["id"] for o in (p1.get("data") or [])]
    if ok:
        p2 = s.call("GET", "/v1/terminal/locations",
                    [("limit", "2"), ("starting_after", seen[-1])])
        seen += [o["id"] for o in (p2.get("data") or [])]
        check("starting_after continues without repeats",
              p2.status == 200 and len(seen) == len(set(seen)) == 3
              and p2.get("has_more") is False, repr(p2))
    r = s.call("POST", "/v1/terminal/readers", [("label", "x"), ("location", loc_ids[0])])
    check("reader without registration_code is 400 parameter_missing",
          r.status == 400 and r.err_code() == "parameter_missing"
          and (r.get("error") or {}).get("param") == "registration_code", repr(r))
    r = s.call("POST", "/v1/terminal/readers",
               [("registration_code", "not-a-real-code"), ("location", loc_ids[0])])
    check("unknown registration code refused (400)", r.status == 400
          and r.err_type() == "invalid_request_error", repr(r))
    readers = {}
    for code, dtype in (("simulated-wpe", "simulated_wisepos_e"),
                        ("simulated-s700", "simulated_stripe_s700"),
                        ("simulated-s710", "simulated_stripe_s710")):
        r = s.call("POST", "/v1/terminal/readers",
                   [("registration_code", code), ("label", f"emu {code}"), ("location", loc_ids[1])])
        check(f"register {code} → {dtype}", r.status == 200 and r.get("device_type") == dtype
              and str(r.get("id", "")).startswith("tmr_") and r.get("location") == loc_ids[1]
              and r.get("label") == f"emu {code}", repr(r))
        readers[code] = r.json or {}
    wpe = readers["simulated-wpe"].get("id")
    s700 = readers["simulated-s700"].get("id")
    last_seen = readers["simulated-wpe"].get("last_seen_at")
    check("last_seen_at is in milliseconds", isinstance(last_seen, int) and last_seen > 10**12,
          f"last_seen_at={last_seen!r}")
    check("reader status online/offline", readers["simulated-wpe"].get("status") in ("online", "offline"))
    r = s.call("GET", "/v1/terminal/readers", [("location", loc_ids[1])])
    check("list readers filtered by location", r.status == 200
          and sorted(o["id"] for o in r.get("data") or []) == sorted(
              x.get("id") for x in readers.values()), repr(r))
    r = s.call("GET", f"/v1/terminal/readers/{wpe}", account=acct)
    check("platform reader asked with Stripe-Account is 404 resource_missing",
          r.status == 404 and r.err_code() == "resource_missing", repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{s700}", [("label", "renamed")])
    check("update reader label", r.status == 200 and r.get("label") == "renamed", repr(r))

    print("== emulator: payment intents on a connected account + platform reader", flush=True)

    def create_pi(amount, capture="automatic", idem=None, extra=()):
        return s.call("POST", "/v1/payment_intents", [
            ("amount", str(amount)), ("currency", "eur"),
            ("payment_method_types[]", "card_present"), ("capture_method", capture),
        ] + list(extra), account=acct, idem=idem)

    r = s.call("POST", "/v1/payment_intents", [("currency", "eur")], account=acct)
    check("PI without amount is 400 parameter_missing", r.status == 400
          and r.err_code() == "parameter_missing" and (r.get("error") or {}).get("param") == "amount",
          repr(r))
    r = create_pi(1000, "manual", extra=[("metadata[order]", "A1"), ("description", "coffee")])
    pi = r.get("id")
    check("create PI with Stripe-Account", r.status == 200 and str(pi).startswith("pi_")
          and r.get("status") == "requires_payment_method"
          and (r.get("metadata") or {}).get("order") == "A1", repr(r))
    r = s.call("GET", f"/v1/payment_intents/{pi}")
    check("PI asked without Stripe-Account is 404 resource_missing",
          r.status == 404 and r.err_code() == "resource_missing", repr(r))
    r = s.call("GET", f"/v1/payment_intents/{pi}", account=acct)
    check("PI asked with Stripe-Account", r.status == 200 and r.get("id") == pi, repr(r))

    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", pi)])
    act = r.get("action") or {}
    check("process_payment_intent on the platform reader (no Stripe-Account)",
          r.status == 200 and act.get("type") == "process_payment_intent"
          and act.get("status") == "in_progress"
          and (act.get("process_payment_intent") or {}).get("payment_intent") == pi, repr(r))
    other = create_pi(1000).get("id")
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", other)])
    check("second action on a busy reader is 400 terminal_reader_busy",
          r.status == 400 and r.err_code() == "terminal_reader_busy", repr(r))
    r = s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method")
    check("present_payment_method (test helper) returns the reader", r.status == 200
          and r.get("object") == "terminal.reader", repr(r))

    def reader_done(rid):
        rr = s.call("GET", f"/v1/terminal/readers/{rid}")
        a = rr.get("action") or {}
        return rr if a.get("status") in ("succeeded", "failed") else None

    rr = wait_until(lambda: reader_done(wpe), 10)
    check("action succeeded after the card", rr is not None
          and (rr.get("action") or {}).get("status") == "succeeded", repr(rr))
    r = s.call("GET", f"/v1/payment_intents/{pi}", account=acct)
    check("manual PI is requires_capture", r.get("status") == "requires_capture"
          and r.get("amount_capturable") == 1000, repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", pi)])
    check("processing a requires_capture PI is 400 intent_invalid_state",
          r.status == 400 and r.err_code() == "intent_invalid_state", repr(r))
    r = s.call("POST", f"/v1/payment_intents/{pi}/capture", [("amount_to_capture", "600")],
               account=acct)
    check("partial capture amount_to_capture=600", r.status == 200 and r.get("status") == "succeeded"
          and r.get("amount_received") == 600, repr(r))
    r = s.call("POST", "/v1/refunds", [("payment_intent", pi), ("amount", "700")], account=acct)
    check("refund above the captured amount is 400", r.status == 400
          and r.err_type() == "invalid_request_error", repr(r))
    r = s.call("POST", "/v1/refunds", [("payment_intent", pi), ("amount", "250")], account=acct)
    check("partial refund", r.status == 200 and r.get("object") == "refund"
          and r.get("amount") == 250 and r.get("status") in ("succeeded", "pending"), repr(r))
    r = s.call("POST", f"/v1/payment_intents/{pi}/cancel", account=acct)
    check("cancel a succeeded PI is 400", r.status == 400, repr(r))

    print("== emulator: decline and retry on the same PI", flush=True)
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", other)])
    check("reader free again for the next PI", r.status == 200, repr(r))
    r = s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method",
               [("type", "card_present"), ("card_present[number]", "4000000000000002")])
    check("present the declining test card 4000000000000002", r.status == 200, repr(r))
    rr = wait_until(lambda: reader_done(wpe), 10)
    act = (rr.get("action") if rr else None) or {}
    check("action failed with card_declined", act.get("status") == "failed"
          and act.get("failure_code") == "card_declined", repr(rr))
    r = s.call("GET", f"/v1/payment_intents/{other}", account=acct)
    check("declined PI back to requires_payment_method with last_payment_error",
          r.get("status") == "requires_payment_method"
          and isinstance(r.get("last_payment_error"), dict), repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", other)])
    check("the same PI can be processed again", r.status == 200, repr(r))
    s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method")
    wait_until(lambda: reader_done(wpe), 10)
    r = s.call("GET", f"/v1/payment_intents/{other}", account=acct)
    check("retry with the default card succeeds (automatic capture)",
          r.get("status") == "succeeded" and r.get("amount_received") == 1000, repr(r))

    r = create_pi(1005)
    amt05 = r.get("id")
    s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent", [("payment_intent", amt05)])
    s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method")
    rr = wait_until(lambda: reader_done(wpe), 10)
    act = (rr.get("action") if rr else None) or {}
    r = s.call("GET", f"/v1/payment_intents/{amt05}", account=acct)
    lpe = r.get("last_payment_error") or {}
    check("test amount ending 05 declines (generic_decline)", act.get("status") == "failed"
          and lpe.get("decline_code") == "generic_decline", repr(r))

    print("== emulator: cancel_action, cancel, display, offline", flush=True)
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent", [("payment_intent", amt05)])
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/cancel_action")
    check("cancel_action before the card", r.status == 200
          and (r.get("action") is None or (r.get("action") or {}).get("status") != "in_progress"),
          repr(r))
    r = s.call("POST", f"/v1/payment_intents/{amt05}/cancel",
               [("cancellation_reason", "requested_by_customer")], account=acct)
    check("cancel PI", r.status == 200 and r.get("status") == "canceled"
          and r.get("cancellation_reason") == "requested_by_customer", repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent", [("payment_intent", amt05)])
    check("processing a canceled PI is 400 intent_invalid_state", r.status == 400
          and r.err_code() == "intent_invalid_state", repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/set_reader_display", [
        ("type", "cart"), ("cart[currency]", "eur"),
        ("cart[line_items][0][description]", "Tea"), ("cart[line_items][0][amount]", "450"),
        ("cart[line_items][0][quantity]", "1"), ("cart[tax]", "0"), ("cart[total]", "450")])
    check("set_reader_display with an indexed cart", r.status == 200
          and (r.get("action") or {}).get("type") == "set_reader_display", repr(r))
    s.call("POST", f"/v1/terminal/readers/{wpe}/cancel_action")
    r = request("POST", f"{sim_base}/_sim/readers/{s700}/offline")
    check("/_sim/readers/{id}/offline", 200 <= r.status < 300, repr(r))
    pi_off = create_pi(1000).get("id")
    r = s.call("POST", f"/v1/terminal/readers/{s700}/process_payment_intent",
               [("payment_intent", pi_off)])
    check("offline reader is 400 terminal_reader_offline", r.status == 400
          and r.err_code() == "terminal_reader_offline", repr(r))
    request("POST", f"{sim_base}/_sim/readers/{s700}/online")
    r = s.call("POST", f"/v1/terminal/readers/{s700}/process_payment_intent",
               [("payment_intent", pi_off)])
    check("back online it takes the action", r.status == 200, repr(r))
    s.call("POST", f"/v1/terminal/readers/{s700}/cancel_action")

    print("== emulator: Stripe's documented details", flush=True)
    r = s.call("GET", "/v1/terminal/locations", key="not_a_key")
    check("401 error type is invalid_request_error", r.err_type() == "invalid_request_error", repr(r))
    r = s.call("GET", "/v1/no_such_endpoint")
    check("unknown URL is 404 with the error envelope", r.status == 404
          and r.err_type() == "invalid_request_error", repr(r))
    r = s.call("POST", "/v1/payment_intents", [("amount", "ten"), ("currency", "eur"),
                                               ("payment_method_types[]", "card_present")],
               account=acct)
    check("non-integer amount is 400 parameter_invalid_integer", r.status == 400
          and r.err_code() == "parameter_invalid_integer"
          and (r.get("error") or {}).get("param") == "amount", repr(r))
    r = s.call("POST", "/v1/payment_intents", [("amount", "1000"), ("currency", "eur"),
                                               ("payment_method_types[]", "card_present"),
                                               ("no_such_param", "1")], account=acct)
    check("unknown parameter is 400 parameter_unknown naming it", r.status == 400
          and r.err_code() == "parameter_unknown"
          and (r.get("error") or {}).get("param") == "no_such_param", repr(r))
    r = s.call("POST", "/v1/payment_intents", [("amount", "1000"), ("currency", "eur"),
                                               ("payment_method_types[0]", "card_present"),
                                               ("capture_method", "manual")], account=acct)
    check("indexed array form payment_method_types[0] (stripe-go style) accepted",
          r.status == 200 and r.get("payment_method_types") == ["card_present"], repr(r))
    tip_pi = r.get("id")
    r = s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent",
               [("payment_intent", tip_pi), ("process_config[skip_tipping]", "false"),
                ("process_config[tipping][amount_eligible]", "1000"),
                ("process_config[enable_customer_cancellation]", "true")])
    check("process_config nested params accepted", r.status == 200, repr(r))
    r = s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method",
               [("amount_tip", "150"), ("type", "card_present"),
                ("card_present[number]", "5555555555554444")])
    wait_until(lambda: reader_done(wpe), 10)
    r = s.call("GET", f"/v1/payment_intents/{tip_pi}", [("expand[]", "latest_charge")],
               account=acct)
    charge = r.get("latest_charge") if isinstance(r.get("latest_charge"), dict) else {}
    cp = (charge.get("payment_method_details") or {}).get("card_present") or {}
    check("amount_tip lands in amount_details.tip.amount",
          ((r.get("amount_details") or {}).get("tip") or {}).get("amount") == 150, repr(r))
    check("expand[]=latest_charge gives the charge with card_present details",
          charge.get("object") == "charge" and cp.get("brand") == "mastercard"
          and cp.get("last4") == "4444" and isinstance(cp.get("capture_before"), int)
          and cp.get("reader") == wpe, short(charge))
    r = s.call("POST", f"/v1/payment_intents/{tip_pi}/capture", [("amount_to_capture", "999999")],
               account=acct)
    check("capture above the capturable amount is 400", r.status == 400, repr(r))
    r = s.call("POST", f"/v1/payment_intents/{tip_pi}/cancel", account=acct)
    check("cancel a requires_capture PI releases it", r.status == 200
          and r.get("status") == "canceled", repr(r))
    r = s.call("POST", f"/v1/payment_intents/{tip_pi}/capture", account=acct)
    check("capture a canceled PI is 400 payment_intent_unexpected_state", r.status == 400
          and r.err_code() == "payment_intent_unexpected_state", repr(r))
    for number, code, decline in (("4000000000009995", "card_declined", "insufficient_funds"),
                                  ("4000000000000069", "expired_card", None),
                                  ("4000000000000119", "processing_error", None)):
        x = create_pi(1000).get("id")
        s.call("POST", f"/v1/terminal/readers/{wpe}/process_payment_intent", [("payment_intent", x)])
        s.call("POST", f"/v1/test_helpers/terminal/readers/{wpe}/present_payment_method",
               [("type", "card_present"), ("card_present[number]", number)])
        wait_until(lambda: reader_done(wpe), 10)
        r = s.call("GET", f"/v1/payment_intents/{x}", account=acct)
        lpe = r.get("last_payment_error") or {}
        check(f"test card {number} → {code}{' / ' + decline if decline else ''}",
              r.get("status") == "requires_payment_method" and lpe.get("code") == code
              and (decline is None or lpe.get("decline_code") == decline), repr(r))
        s.call("POST", f"/v1/payment_intents/{x}/cancel", account=acct)
    r = s.call("POST", "/v1/terminal/locations", [("display_name", "Temp")] + address)
    tmp_loc = r.get("id")
    r = s.call("DELETE", f"/v1/terminal/locations/{tmp_loc}")
    check("DELETE location → deleted:true", r.status == 200 and r.get("deleted") is True
          and r.get("id") == tmp_loc and r.get("object") == "terminal.location", repr(r))
    r = s.call("GET", f"/v1/terminal/locations/{tmp_loc}")
    check("deleted location is 404", r.status == 404, repr(r))
    r = s.call("POST", "/v1/terminal/readers", [("registration_code", "simulated-wpe"),
                                                ("location", loc_ids[2])])
    tmp_reader = r.get("id")
    check("label defaults to something when omitted", r.status == 200
          and isinstance(r.get("label"), str) and r.get("label"), repr(r))
    r = s.call("DELETE", f"/v1/terminal/readers/{tmp_reader}")
    check("DELETE reader → deleted:true", r.status == 200 and r.get("deleted") is True
          and r.get("object") == "terminal.reader", repr(r))

    print("== emulator: idempotency", flush=True)
    r1 = create_pi(4200, idem="accept-key-1")
    r2 = create_pi(4200, idem="accept-key-1")
    check("same Idempotency-Key and params replays the same PI", r1.status == 200
          and r2.status == 200 and r1.get("id") == r2.get("id"), f"{r1} / {r2}")
    check("Idempotency-Key echoed in the response headers",
          (r2.headers.get("Idempotency-Key") if r2.headers else None) == "accept-key-1")
    r4 = s.call("POST", "/v1/payment_intents", [("amount", "4200"), ("currency", "eur"),
                                                ("payment_method_types[]", "card_present")],
                idem="accept-key-1")
    check("the same key on another account is a different request",
          r4.status == 200 and r4.get("id") != r1.get("id"), repr(r4))
    r3 = create_pi(4300, idem="accept-key-1")
    check("same key, other params is 400 idempotency_error", r3.status == 400
          and r3.err_type() == "idempotency_error", repr(r3))
    r = s.call("GET", "/v1/payment_intents", [("limit", "100")], account=acct)
    ids = [o["id"] for o in r.get("data") or []]
    check("PI list on the account counts one for the replayed key",
          ids.count(r1.get("id")) == 1, repr(r))
    r = s.call("GET", "/v1/payment_intents", [("limit", "100")])
    check("platform PI list does not show the connected account's PIs",
          r.status == 200 and r1.get("id") not in [o["id"] for o in r.get("data") or []], repr(r))
    r = request("GET", f"{sim_base}/_sim/requests")
    log = r.json if isinstance(r.json, list) else []
    entry_ok = any(e.get("idempotency_key") == "accept-key-1" and e.get("account") == acct
                   and e.get("method") == "POST" and e.get("path") == "/v1/payment_intents"
                   and "status" in e for e in log)
    check("/_sim/requests logs method, path, account, idempotency_key, status", entry_ok,
          short(log[-3:] if log else r.raw.decode("utf-8", "replace")))


# ---------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, binary, config, env, log_path):
        self.binary = binary
        self.config = config
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self, api):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "run", "--config", self.config],
                                     env=self.env, stdout=log, stderr=log)
        log.close()
        ok = wait_until(lambda: self.proc.poll() is not None
                        or api.call("GET", "/healthz").status == 200, 20)
        return ok and self.proc.poll() is None

    def tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def daemon_section(binary, s, sim_base, tmp, port):
    tokens = TOKENS
    sha = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in tokens.items()}
    store = os.path.join(tmp, "store")
    config = os.path.join(tmp, "readerd.toml")
    whsec_file = os.path.join(tmp, "whsec")
    with open(whsec_file, "w") as f:
        f.write(WHSEC)
    os.chmod(whsec_file, 0o600)
    with open(config, "w") as f:
        f.write(f"""[stripe]
api_base = "{sim_base}"
webhook_secret_file = "{whsec_file}"

[store]
path = "{store}"

[api]
listen = "127.0.0.1:{port}"

[[api.clients]]
name = "operator"
token_sha256 = "{sha['admin']}"
role = "admin"

[[api.clients]]
name = "front-desk"
token_sha256 = "{sha['pos']}"
role = "pos"
merchants = ["bakery"]

[[api.clients]]
name = "cafe-till"
token_sha256 = "{sha['pos2']}"
role = "pos"
merchants = ["cafe"]
""")
    env = dict(os.environ)
    env["READERD_STRIPE_SECRET_KEY"] = SK
    env.pop("READERD_TOKEN", None)

    print("== daemon: check-config", flush=True)
    cc = subprocess.run([binary, "check-config", "--config", config], env=env,
                        capture_output=True, timeout=30)
    check("check-config on a valid config exits 0", cc.returncode == 0,
          cc.stderr.decode("utf-8", "replace")[-300:])
    bad = os.path.join(tmp, "bad.toml")
    with open(config) as src, open(bad, "w") as dst:
        dst.write(src.read().replace("[store]\n", "[store]\nno_such_key = 1\n"))
    cc = subprocess.run([binary, "check-config", "--config", bad], env=env,
                        capture_output=True, timeout=30)
    msg = (cc.stderr + cc.stdout).decode("utf-8", "replace")
    check("check-config with an unknown key exits 64 naming it", cc.returncode == 64
          and "no_such_key" in msg, f"rc={cc.returncode} {short(msg)}")
    check("check-config message has no debug dump", "{ " not in msg and "Error(" not in msg
          and "panicked" not in msg, short(msg))
    nokey = dict(env)
    nokey.pop("READERD_STRIPE_SECRET_KEY", None)
    nokey.pop("CREDENTIALS_DIRECTORY", None)
    cc = subprocess.run([binary, "check-config", "--config", config], env=nokey,
                        capture_output=True, timeout=30)
    check("check-config without a secret key exits 64", cc.returncode == 64,
          f"rc={cc.returncode} {short((cc.stderr + cc.stdout).decode('utf-8', 'replace'))}")

    api = Api(f"http://127.0.0.1:{port}")
    d = Daemon(binary, config, env, os.path.join(tmp, "daemon.log"))
    if not check("daemon starts and answers /healthz", d.start(api), d.tail()):
        return d

    A, P, P2 = tokens["admin"], tokens["pos"], tokens["pos2"]

    print("== daemon: operations endpoints and auth", flush=True)
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(api.call("GET", "/readyz")), 10)
    check("/readyz 200 (store open, Stripe reachable)", r is not None, d.tail())
    r = api.call("GET", "/metrics")
    ctype = r.headers.get("Content-Type", "") if r.headers else ""
    check("/metrics is Prometheus text", r.status == 200 and ctype.startswith("text/plain")
          and b"# TYPE" in r.raw, f"{r.status} {ctype}")
    r = api.call("GET", "/v1/merchants")
    check("no token is 401 with the error envelope", r.status == 401
          and isinstance(r.get("error"), dict) and "code" in r.get("error", {})
          and "message" in r.get("error", {}), repr(r))
    r = api.call("GET", "/v1/merchants", token="wrong-token")
    check("unknown token is 401", r.status == 401, repr(r))

    print("== daemon: merchants", flush=True)
    accounts = {}
    for name in ("bakery", "cafe", "deli"):
        r = s.call("POST", "/v1/accounts", [
            ("type", "custom"), ("country", "DE"),
            ("capabilities[card_payments][requested]", "true"),
            ("capabilities[transfers][requested]", "true")])
        accounts[name] = r.get("id")
    r = s.call("POST", "/v1/accounts", [("type", "custom"), ("country", "FR"),
                                        ("capabilities[card_payments][requested]", "true")])
    accounts["paris"] = r.get("id")
    check("connected accounts created on the emulator",
          all(str(a).startswith("acct_") for a in accounts.values()), short(accounts))
    r = api.call("POST", "/v1/merchants", P, {"id": "bakery", "account": accounts["bakery"],
                                              "display_name": "Bakery", "charge_type": "direct"})
    check("pos cannot add merchants (403)", r.status == 403, repr(r))
    for mid, ctype_ in (("bakery", "direct"), ("cafe", "direct"), ("deli", "destination"),
                        ("paris", "direct")):
        r = api.call("POST", "/v1/merchants", A, {"id": mid, "account": accounts[mid],
                                                  "display_name": mid.title(), "charge_type": ctype_})
        check(f"admin adds merchant {mid} ({ctype_})", r.status in (200, 201)
              and r.get("id") == mid, repr(r))
    r = api.call("POST", "/v1/merchants", A, {"id": "ghost", "account": "acct_doesnotexist",
                                              "display_name": "Ghost", "charge_type": "direct"})
    check("merchant with an unknown account refused (4xx)", 400 <= r.status < 500
          and isinstance(r.get("error"), dict), repr(r))
    bare = s.call("POST", "/v1/accounts", [("type", "custom"), ("country", "DE")]).get("id")
    r = api.call("POST", "/v1/merchants", A, {"id": "noncard", "account": bare,
                                              "display_name": "No cards", "charge_type": "direct"})
    if r.status in (200, 201):
        accounts["noncard"] = bare  # charged (and refused) once readers exist
    else:
        check("an account without card_payments is refused with a reason", 400 <= r.status < 500
              and isinstance(r.get("error"), dict), repr(r))
    r = api.call("POST", "/v1/merchants", A, {"id": "bad", "account": accounts["bakery"],
                                              "display_name": "x", "charge_type": "sideways"})
    check("bad charge_type is 400", r.status == 400, repr(r))
    r = api.call("GET", "/v1/merchants/bakery", A)
    check("GET merchant shows card_payments active", r.status == 200
          and "card_payments" in json.dumps(r.json) and "active" in json.dumps(r.json), repr(r))
    r = api.call("GET", "/v1/merchants", A)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("admin lists all merchants", {m.get("id") for m in lst} >= {"bakery", "cafe", "deli"},
          repr(r))
    # The contract lists merchants under "(admin)": a pos client is refused, and refused the
    # same way for its own merchant and another's, so the answer reveals nothing.
    r = api.call("GET", "/v1/merchants", P)
    check("pos may not list merchants (admin only, 403)", r.status == 403, repr(r))
    own = api.call("GET", "/v1/merchants/bakery", P)
    other = api.call("GET", "/v1/merchants/cafe", P)
    ghost = api.call("GET", "/v1/merchants/nonexistent", P)
    check("pos gets the same answer for its own, another's and a missing merchant",
          own.status == other.status == ghost.status and own.status in (403, 404)
          and own.err_code() == other.err_code() == ghost.err_code(), f"{own} / {other} / {ghost}")
    r = api.call("GET", "/v1/merchants/nonexistent", A)
    check("unknown merchant is 404 for admin", r.status == 404, repr(r))

    print("== daemon: locations and readers", flush=True)
    addr = {"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    r = api.call("POST", "/v1/locations", A, {"display_name": "Bakery front", "address": addr,
                                              "merchant": "bakery"})
    loc = r.get("id")
    check("admin creates a location", r.status in (200, 201) and str(loc).startswith("tml_"), repr(r))
    r = s.call("GET", f"/v1/terminal/locations/{loc}")
    check("the location exists on Stripe (platform)", r.status == 200, repr(r))
    r = api.call("POST", "/v1/locations", A, {"display_name": "Wrong country", "merchant": "paris",
                                              "address": addr})
    check("location country ≠ merchant country is refused (400)", r.status == 400
          and isinstance(r.get("error"), dict), repr(r))
    r = api.call("POST", "/v1/locations", A, {"display_name": "Shared hall", "address": addr})
    check("a location without a merchant (the field is optional)", r.status in (200, 201)
          and str(r.get("id")).startswith("tml_"), repr(r))
    r = api.call("POST", "/v1/readers", A, {"registration_code": "simulated-wpe", "label": "lost",
                                            "location": "tml_doesnotexist"})
    check("registering at an unknown location is a 4xx", 400 <= r.status < 500
          and isinstance(r.get("error"), dict), repr(r))
    r = api.call("POST", "/v1/locations", P, {"display_name": "x", "address": addr})
    check("pos cannot create locations (403)", r.status == 403, repr(r))
    r = api.call("GET", "/v1/locations", P)
    check("pos may read locations", r.status == 200, repr(r))
    reader_ids = {}
    for code, label in (("simulated-wpe", "counter-1"), ("simulated-s700", "counter-2")):
        r = api.call("POST", "/v1/readers", A, {"registration_code": code, "label": label,
                                                "location": loc})
        reader_ids[label] = r.get("id")
        check(f"register reader {code} as {label}", r.status in (200, 201)
              and str(r.get("id")).startswith("tmr_"), repr(r))
    r = api.call("POST", "/v1/readers", A, {"registration_code": "bogus-code", "label": "x",
                                            "location": loc})
    check("refused registration code gives a 4xx with a message", 400 <= r.status < 500
          and isinstance(r.get("error"), dict), repr(r))
    r = s.call("POST", "/v1/terminal/readers", [("registration_code", "simulated-s710"),
                                                ("label", "direct-1"), ("location", loc)])
    direct_id = r.get("id")
    reader_ids["direct-1"] = direct_id
    check("reader registered directly on the emulator", r.status == 200, repr(r))
    r = api.call("POST", "/v1/readers/sync", P)
    check("pos cannot sync (403)", r.status == 403, repr(r))
    r = api.call("POST", "/v1/readers/sync", A)
    check("admin sync", 200 <= r.status < 300, repr(r))
    r = api.call("GET", "/v1/readers", A)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("sync picked up the directly registered reader",
          direct_id in [x.get("id") for x in lst], repr(r))
    r = api.call("GET", f"/v1/readers/{reader_ids['counter-1']}", P)
    rd = r.json or {}
    check("reader shows live state (status, last_seen_at, busy, queue depth)", r.status == 200
          and rd.get("status") in ("online", "offline") and "last_seen_at" in rd
          and any("busy" in k for k in rd) and any("queue" in k for k in rd), repr(r))
    r = api.call("GET", "/v1/readers/tmr_doesnotexist", A)
    check("unknown reader is 404", r.status == 404, repr(r))

    print("== daemon: restart keeps the registry", flush=True)
    rc = stop(d.proc)
    check("SIGTERM exits 0", rc == 0, f"rc={rc} {d.tail()}")
    if not check("daemon restarts on the same store", d.start(api), d.tail()):
        return d
    r = api.call("GET", "/v1/merchants", A)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("merchants survive the restart", {m.get("id") for m in lst} >= {"bakery", "cafe", "deli"},
          repr(r))
    r = api.call("GET", "/v1/locations", A)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("locations survive the restart", loc in [x.get("id") for x in lst], repr(r))
    r = api.call("GET", "/v1/readers", A)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("readers survive the restart",
          {reader_ids["counter-1"], reader_ids["counter-2"], direct_id}
          <= {x.get("id") for x in lst}, repr(r))

    payments_section(api, s, d, accounts, reader_ids, sim_base, tokens)
    if d.proc.poll() is None:
        cli_section(binary, api, tokens, reader_ids)
        webhook_section(api)
    return d


def payments_section(api, s, d, accounts, reader_ids, sim_base, tokens):
    A, P, P2 = tokens["admin"], tokens["pos"], tokens["pos2"]
    r1 = reader_ids["counter-1"]
    r2 = reader_ids["counter-2"]
    made = []  # (payment id, account or None for platform)
    queued_cancels = set()  # canceled before they left the queue: no PaymentIntent

    def get(pid, token=A):
        return api.call("GET", f"/v1/payments/{pid}", token)

    def wait_status(pid, wanted, timeout=15):
        wanted = (wanted,) if isinstance(wanted, str) else wanted
        r = wait_until(lambda: (lambda x: x if x.get("status") in wanted else None)(get(pid)),
                       timeout, 0.1)
        return r or get(pid)

    def wait_on_reader(pid, timeout=15):
        """Until the payment's PI is the reader's in-progress action."""
        def ready():
            p = get(pid)
            pi = p.get("payment_intent")
            if p.get("status") != "processing" or not pi:
                return None
            rr = s.call("GET", f"/v1/terminal/readers/{p.get('reader')}")
            a = rr.get("action") or {}
            if a.get("status") == "in_progress" and \
                    (a.get("process_payment_intent") or {}).get("payment_intent") == pi:
                return p
            return None
        return wait_until(ready, timeout, 0.1)

    def present(reader, number=None):
        params = [("type", "card_present"), ("card_present[number]", number)] if number else []
        return s.call("POST", f"/v1/test_helpers/terminal/readers/{reader}/present_payment_method",
                      params)

    def pay(body, token=P, idem=None):
        r = api.call("POST", "/v1/payments", token, body, idem=idem)
        if r.status == 201 and r.get("id"):
            made.append((r.get("id"), body.get("merchant")))
        return r

    print("== daemon: a payment", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 1250, "currency": "eur",
             "capture": "automatic", "description": "bread", "metadata": {"order": "42"}})
    pid = r.get("id")
    check("POST /v1/payments → 201 with the payment", r.status == 201 and pid
          and r.get("status") in ("queued", "processing") and r.get("merchant") == "bakery"
          and r.get("amount") == 1250 and r.get("currency") == "eur", repr(r))
    keys = {"id", "status", "merchant", "reader", "amount", "currency", "capture", "payment_intent",
            "amount_captured", "amount_refunded", "tip", "failure", "created_at", "updated_at"}
    check("payment has every contract field", isinstance(r.json, dict) and keys <= set(r.json),
          f"missing {sorted(keys - set(r.json or {}))}")
    p = wait_on_reader(pid)
    check("payment reaches processing with its PI on the reader", p is not None, repr(get(pid)))
    pi = (p or get(pid)).get("payment_intent")
    check("payment reader is the reader's id", (p or {}).get("reader") == r1, repr(p))
    present(r1)
    p = wait_status(pid, "succeeded")
    check("card presented → succeeded", p.get("status") == "succeeded"
          and p.get("amount_captured") == 1250, repr(p))
    r = s.call("GET", f"/v1/payment_intents/{pi}", account=accounts["bakery"])
    check("PI on the merchant's connected account with metadata[readerd_payment]",
          r.status == 200 and (r.get("metadata") or {}).get("readerd_payment") == pid
          and r.get("capture_method") == "automatic"
          and "card_present" in (r.get("payment_method_types") or []), repr(r))
    check("description and metadata reach the PaymentIntent", r.get("description") == "bread"
          and (r.get("metadata") or {}).get("order") == "42", repr(r))
    check("payment is 404 to another merchant's pos", get(pid, P2).status == 404)
    r = api.call("GET", "/v1/payments?merchant=bakery", P2)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("a pos filtering on another merchant sees none of its payments",
          r.status in (200, 403, 404) and not lst, repr(r))
    check("payment is 404 for an unknown id", get("pay_doesnotexist").status == 404)
    r = api.call("GET", "/v1/payments?merchant=bakery&status=succeeded", P)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("list with filters", r.status == 200 and pid in [x.get("id") for x in lst], repr(r))
    r = api.call("GET", "/v1/payments", P2)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("another merchant's pos does not list it", r.status == 200
          and pid not in [x.get("id") for x in lst], repr(r))
    r = pay({"merchant": "cafe", "reader": "counter-1", "amount": 500, "currency": "eur"}, token=P)
    check("pos charging outside its merchants is refused (403/404)", r.status in (403, 404), repr(r))
    if "noncard" in accounts:
        pr = api.call("POST", "/v1/payments", A, {"merchant": "noncard", "reader": "counter-1",
                                                  "amount": 1000, "currency": "eur"})
        # The contract lists merchant_not_enabled among the failure codes of a failed payment.
        refused = 400 <= pr.status < 500 and "not_enabled" in json.dumps(pr.json)
        failed = pr.status == 201 and pr.get("status") == "failed" \
            and (pr.get("failure") or {}).get("code") == "merchant_not_enabled" \
            and not pr.get("payment_intent")
        check("a merchant without active card_payments cannot be charged (merchant_not_enabled)",
              refused or failed, repr(pr))
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": -5, "currency": "eur"})
    check("negative amount is 400", r.status == 400, repr(r))
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 500, "currency": "EUR"})
    check("upper-case currency is 400", r.status == 400, repr(r))
    r = pay({"merchant": "bakery", "reader": "no-such-reader", "amount": 500, "currency": "eur"})
    check("unknown reader is 4xx", 400 <= r.status < 500 and r.status != 401, repr(r))
    r = api.call("POST", "/v1/payments", P, b"{not json")
    check("malformed JSON is 400 with the error envelope", r.status == 400
          and isinstance(r.get("error"), dict), repr(r))

    print("== daemon: decline then retry on the same PaymentIntent", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 2000, "currency": "eur"})
    pid = r.get("id")
    p = wait_on_reader(pid)
    pi = (p or {}).get("payment_intent")
    present(r1, "4000000000000002")
    p = wait_status(pid, "declined")
    check("declining card → declined with a failure", p.get("status") == "declined"
          and isinstance(p.get("failure"), dict) and (p.get("failure") or {}).get("code"), repr(p))
    r = api.call("POST", f"/v1/payments/{pid}/retry", P)
    check("retry accepted", 200 <= r.status < 300, repr(r))
    p = wait_on_reader(pid)
    check("retry goes back to the reader on the same PI", p is not None
          and p.get("payment_intent") == pi, repr(get(pid)))
    present(r1)
    p = wait_status(pid, "succeeded")
    check("retry succeeds", p.get("status") == "succeeded", repr(p))
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 2105, "currency": "eur"})
    pid05 = r.get("id")
    if wait_on_reader(pid05):
        present(r1)
    p = wait_status(pid05, "declined")
    check("test amount ending 05 → declined", p.get("status") == "declined", repr(p))
    r = api.call("POST", f"/v1/payments/{pid05}/cancel", P)
    p = wait_status(pid05, "canceled")
    check("cancel a declined payment → canceled", p.get("status") == "canceled", repr(p))

    print("== daemon: manual capture, partial, refunds", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-2", "amount": 3000, "currency": "eur",
             "capture": "manual"})
    pid = r.get("id")
    if wait_on_reader(pid):
        present(r2)
    p = wait_status(pid, "requires_capture")
    check("manual capture → requires_capture", p.get("status") == "requires_capture", repr(p))
    r = api.call("POST", f"/v1/payments/{pid}/capture", P, {"amount": 2500})
    p = wait_status(pid, "succeeded")
    check("partial capture 2500 → succeeded", 200 <= r.status < 300
          and p.get("status") == "succeeded" and p.get("amount_captured") == 2500, f"{r} / {p}")
    r = api.call("POST", f"/v1/payments/{pid}/refunds", P, {"amount": 1000}, idem="refund-1")
    r_again = api.call("POST", f"/v1/payments/{pid}/refunds", P, {"amount": 1000}, idem="refund-1")
    p = get(pid)
    check("refund 1000 (replayed with its key) → amount_refunded 1000",
          200 <= r.status < 300 and 200 <= r_again.status < 300
          and p.get("amount_refunded") == 1000, f"{r} / {r_again} / {p}")
    r = api.call("POST", f"/v1/payments/{pid}/refunds", P, {"amount": 2000})
    check("refund beyond the captured amount refused (4xx)", 400 <= r.status < 500, repr(r))
    r = api.call("POST", f"/v1/payments/{pid}/refunds", P)
    p = get(pid)
    check("refund of the rest → amount_refunded 2500", 200 <= r.status < 300
          and p.get("amount_refunded") == 2500, f"{r} / {p}")
    refunds = s.list_all("/v1/refunds", account=accounts["bakery"],
                         params=[("payment_intent", p.get("payment_intent"))])
    check("refunds on the merchant's account add up to 2500",
          sum(x.get("amount", 0) for x in refunds) == 2500, short(refunds))

    print("== daemon: cancel", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 800, "currency": "eur"})
    pid = r.get("id")
    wait_on_reader(pid)
    r = api.call("POST", f"/v1/payments/{pid}/cancel", P)
    p = wait_status(pid, "canceled")
    check("cancel on the reader before the card → canceled", 200 <= r.status < 300
          and p.get("status") == "canceled", f"{r} / {p}")
    pi = p.get("payment_intent")
    if pi:
        r = s.call("GET", f"/v1/payment_intents/{pi}", account=accounts["bakery"])
        check("its PI is canceled on Stripe", r.get("status") == "canceled", repr(r))
    rr = s.call("GET", f"/v1/terminal/readers/{r1}")
    check("reader no longer busy with it", (rr.get("action") or {}).get("status") != "in_progress",
          repr(rr))

    print("== daemon: Idempotency-Key", flush=True)
    body = {"merchant": "cafe", "reader": "counter-1", "amount": 990, "currency": "eur"}
    a1 = pay(body, token=P2, idem="pos-key-1")
    a2 = api.call("POST", "/v1/payments", P2, body, idem="pos-key-1")
    check("same key and body → the same payment", a1.status == 201 and a2.status in (200, 201)
          and a1.get("id") == a2.get("id"), f"{a1} / {a2}")
    a3 = api.call("POST", "/v1/payments", P2, dict(body, amount=991), idem="pos-key-1")
    check("same key, other body → 409", a3.status == 409 and isinstance(a3.get("error"), dict),
          repr(a3))

    print("== daemon: Server-Sent Events", flush=True)
    pid = a1.get("id")
    events = []
    done = threading.Event()

    def listen():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(api.base.rsplit(":", 1)[1]),
                                              timeout=15)
            conn.request("GET", f"/v1/payments/{pid}/events",
                         headers={"Authorization": f"Bearer {P2}", "Accept": "text/event-stream"})
            resp = conn.getresponse()
            events.append(("status", resp.status, resp.getheader("Content-Type", "")))
            while not done.is_set():
                line = resp.fp.readline()
                if not line:
                    break
                events.append(("line", line.decode("utf-8", "replace").rstrip("\n")))
                if b"succeeded" in line:
                    break
            conn.close()
        except OSError as e:
            events.append(("error", str(e)))
        finally:
            done.set()

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    if wait_on_reader(pid):
        present(r1)
    p = wait_status(pid, "succeeded")
    done.wait(10)
    head = events[0] if events else None
    data_lines = [e[1] for e in events if e[0] == "line" and e[1].startswith("data:")]
    check("SSE stream is text/event-stream", head is not None and head[0] == "status"
          and head[1] == 200 and head[2].startswith("text/event-stream"), short(events))
    check("SSE carries the status changes up to succeeded",
          any("succeeded" in x for x in data_lines) and len(data_lines) >= 2, short(events))
    check("cafe payment succeeded on a shared reader", p.get("status") == "succeeded", repr(p))

    print("== daemon: destination charge", flush=True)
    r = pay({"merchant": "deli", "reader": "counter-2", "amount": 1500, "currency": "eur"}, token=A)
    pid = r.get("id")
    if wait_on_reader(pid):
        present(r2)
    p = wait_status(pid, "succeeded")
    check("destination payment succeeded", p.get("status") == "succeeded", repr(p))
    r = s.call("GET", f"/v1/payment_intents/{p.get('payment_intent')}")
    check("its PI is on the platform with transfer_data[destination]", r.status == 200
          and (r.get("transfer_data") or {}).get("destination") == accounts["deli"], repr(r))

    print("== daemon: conflicts, display, tips", flush=True)
    r = api.call("POST", f"/v1/payments/{pid}/capture", A)
    check("capture of a succeeded payment is refused (400/409)", r.status in (400, 409), repr(r))
    r = api.call("POST", f"/v1/payments/{pid}/retry", A)
    check("retry of a succeeded payment is refused (400/409)", r.status in (400, 409), repr(r))
    r = api.call("POST", f"/v1/payments/{pid}/cancel", A)
    check("cancel of a succeeded payment is refused (400/409)", r.status in (400, 409), repr(r))
    r = api.call("GET", "/v1/readers", P)
    check("pos may read readers", r.status == 200, repr(r))
    r = api.call("GET", f"/v1/payments/{made[0][0]}/events", P2)
    check("SSE of another merchant's payment is 404", r.status == 404, repr(r))
    cart = {"currency": "eur", "line_items": [{"description": "Tea", "amount": 450, "quantity": 2}],
            "tax": 0, "total": 900}
    r = api.call("POST", f"/v1/readers/{r2}/display", P, cart)
    check("cart display accepted", 200 <= r.status < 300, repr(r))
    rr = wait_until(lambda: (lambda x: x if (x.get("action") or {}).get("type") ==
                             "set_reader_display" else None)(
        s.call("GET", f"/v1/terminal/readers/{r2}")), 10)
    disp = ((rr.get("action") or {}).get("set_reader_display") or {}) if rr else {}
    check("the cart is on the reader", (disp.get("cart") or {}).get("total") == 900, repr(rr))
    r = pay({"merchant": "bakery", "reader": "counter-2", "amount": 1000, "currency": "eur"})
    pid = r.get("id")
    if wait_on_reader(pid):
        s.call("POST", f"/v1/test_helpers/terminal/readers/{r2}/present_payment_method",
               [("amount_tip", "150")])
    p = wait_status(pid, "succeeded")
    tip = p.get("tip")
    check("a payment after a display succeeds and records the tip once",
          p.get("status") == "succeeded" and (tip == 150 or (isinstance(tip, dict)
                                                            and 150 in tip.values())), repr(p))
    r = api.call("GET", f"/v1/payments?reader={r2}", P)
    lst = r.json if isinstance(r.json, list) else (r.get("data") or [])
    check("list filtered by reader", r.status == 200 and lst
          and all(x.get("reader") == r2 for x in lst), repr(r))

    print("== daemon: a full reader queue", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-2", "amount": 1800, "currency": "eur"})
    head = r.get("id")
    wait_on_reader(head)
    waiting, full = [], None
    for _ in range(200):
        r = pay({"merchant": "bakery", "reader": "counter-2", "amount": 1900, "currency": "eur"})
        if r.status == 201:
            waiting.append(r.get("id"))
            continue
        full = r
        break
    check("a full reader queue answers 429 with the error envelope", full is not None
          and full.status == 429 and isinstance(full.get("error"), dict), repr(full))
    for q in waiting:
        api.call("POST", f"/v1/payments/{q}/cancel", P)
        queued_cancels.add(q)
    still = [q for q in waiting if get(q).get("status") != "canceled"]
    check(f"the {len(waiting)} queued payments cancel at once", not still, short(still))
    api.call("POST", f"/v1/payments/{head}/cancel", P)
    p = wait_status(head, "canceled")
    check("and the one on the reader cancels too", p.get("status") == "canceled", repr(p))

    print("== daemon: validation, queue, scoping of keys", flush=True)
    base = {"merchant": "bakery", "reader": "counter-1", "currency": "eur"}
    for label, body in (("amount 0", dict(base, amount=0)),
                        ("amount above Stripe's 8 digits", dict(base, amount=100000000)),
                        ("amount as a string", dict(base, amount="1250")),
                        ("currency not the merchant's (usd for DE)", dict(base, amount=1000,
                                                                          currency="usd")),
                        ("an unknown field", dict(base, amount=1000, colour="red")),
                        ("capture neither automatic nor manual", dict(base, amount=1000,
                                                                      capture="later"))):
        r = api.call("POST", "/v1/payments", P, body)
        check(f"payment with {label} is 400", r.status == 400
              and isinstance(r.get("error"), dict) and r.get("error", {}).get("message"), repr(r))
    r = api.call("POST", "/v1/payments", P, json.dumps(dict(base, amount=1000,
                 description="x" * 200000)).encode())
    check("an oversized body is refused with the error envelope", r.status in (400, 413)
          and isinstance(r.get("error"), dict), repr(r))
    r = api.call("GET", "/v1/no-such-route", A)
    check("an unknown route is 404 with the error envelope", r.status == 404
          and isinstance(r.get("error"), dict), repr(r))
    # A payment waiting behind another on the same reader is canceled without touching Stripe.
    r = pay(dict(base, amount=1100))
    first = r.get("id")
    wait_on_reader(first)
    r = pay(dict(base, amount=1200))
    second = r.get("id")
    p = get(second)
    check("a second payment on a busy reader is queued", p.get("status") == "queued", repr(p))
    r = api.call("POST", f"/v1/payments/{second}/cancel", P)
    p = wait_status(second, "canceled", 5)
    check("a queued payment cancels at once, with no PaymentIntent", p.get("status") == "canceled"
          and not p.get("payment_intent"), repr(p))
    queued_cancels.add(second)
    present(r1)
    p = wait_status(first, "succeeded")
    check("the payment in front is unaffected", p.get("status") == "succeeded", repr(p))
    # Idempotency keys belong to their client: another till using the same key gets its own.
    b1 = pay({"merchant": "bakery", "reader": "counter-2", "amount": 1300, "currency": "eur"},
             token=P, idem="till-key-7")
    b2 = pay({"merchant": "cafe", "reader": "counter-2", "amount": 1400, "currency": "eur"},
             token=P2, idem="till-key-7")
    check("the same Idempotency-Key from another client is not a conflict",
          b1.status == 201 and b2.status == 201 and b1.get("id") != b2.get("id"), f"{b1} / {b2}")
    for x in (b1, b2):
        if x.get("id"):
            api.call("POST", f"/v1/payments/{x.get('id')}/cancel", A)
            wait_status(x.get("id"), "canceled", 10)
    # Refund idempotency: same key, other amount.
    r = pay({"merchant": "bakery", "reader": "counter-2", "amount": 1700, "currency": "eur"})
    rp = r.get("id")
    if wait_on_reader(rp):
        present(r2)
    wait_status(rp, "succeeded")
    x1 = api.call("POST", f"/v1/payments/{rp}/refunds", P, {"amount": 100}, idem="rf-1")
    x2 = api.call("POST", f"/v1/payments/{rp}/refunds", P, {"amount": 200}, idem="rf-1")
    check("refund: same key, other amount is 409", 200 <= x1.status < 300 and x2.status == 409,
          f"{x1} / {x2}")
    r = api.call("POST", f"/v1/payments/{rp}/capture", P, {"amount": 99999})
    check("capture of an automatic payment is refused", r.status in (400, 409), repr(r))

    print("== daemon: kill -9 mid-payment", flush=True)
    r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 4400, "currency": "eur"})
    mid_pid = r.get("id")
    on_reader = wait_on_reader(mid_pid)
    check("payment on the reader before the kill", on_reader is not None, repr(get(mid_pid)))
    r = pay({"merchant": "cafe", "reader": "counter-2", "amount": 4500, "currency": "eur"}, token=P2)
    fresh_pid = r.get("id")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    check("daemon killed with SIGKILL", d.proc.returncode == -signal.SIGKILL, str(d.proc.returncode))
    started = d.start(api)
    check("daemon restarts after kill -9", started, d.tail())
    if started:
        p = get(mid_pid)
        check("the payment in flight is still not final after restart",
              p.get("status") in ("processing", "queued"), repr(p))
        if wait_on_reader(mid_pid, 20):
            present(r1)
        p = wait_status(mid_pid, "succeeded", 20)
        check("the payment in flight ends succeeded", p.get("status") == "succeeded", repr(p))
        if wait_on_reader(fresh_pid, 20):
            present(r2)
        p = wait_status(fresh_pid, "succeeded", 20)
        check("the payment accepted just before the kill ends succeeded",
              p.get("status") == "succeeded", repr(p))

    if started:
        print("== daemon: SIGTERM mid-payment, kill -9 after a capture request", flush=True)
        r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 4600, "currency": "eur"})
        term_pid = r.get("id")
        wait_on_reader(term_pid)
        rc = stop(d.proc)
        check("SIGTERM with a payment on the reader exits 0", rc == 0, f"rc={rc} {d.tail()}")
        started = d.start(api)
        check("restart after SIGTERM", started, d.tail())
        p = get(term_pid)
        check("the payment on the reader stayed non-final", p.get("status") == "processing",
              repr(p))
        if wait_on_reader(term_pid, 20):
            present(r1)
        p = wait_status(term_pid, "succeeded", 20)
        check("and ends succeeded after the restart", p.get("status") == "succeeded", repr(p))
        r = pay({"merchant": "bakery", "reader": "counter-1", "amount": 4700, "currency": "eur",
                 "capture": "manual"})
        cap_pid = r.get("id")
        if wait_on_reader(cap_pid):
            present(r1)
        wait_status(cap_pid, "requires_capture")
        r = api.call("POST", f"/v1/payments/{cap_pid}/capture", P, {"amount": 4000})
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=10)
        started = d.start(api)
        check("restart after kill -9 following a capture request", started, d.tail())
        p = wait_status(cap_pid, "succeeded", 20)
        pi_obj = s.call("GET", f"/v1/payment_intents/{p.get('payment_intent')}",
                        account=accounts["bakery"])
        check("the capture happened exactly once, for the amount asked",
              p.get("status") == "succeeded" and p.get("amount_captured") == 4000
              and pi_obj.get("amount_received") == 4000, f"{p} / {pi_obj}")

    print("== daemon: PaymentIntents counted on the emulator", flush=True)
    try:
        by_payment = {}
        for acct in list(accounts.values()) + [None]:
            for obj in s.list_all("/v1/payment_intents", account=acct):
                key = (obj.get("metadata") or {}).get("readerd_payment")
                if key:
                    by_payment.setdefault(key, []).append(obj["id"])
        wrong = {pid_: by_payment.get(pid_, []) for pid_, _ in made
                 if len(by_payment.get(pid_, [])) != (0 if pid_ in queued_cancels else 1)}
        check(f"one PaymentIntent per payment, none for queued cancels ({len(made)} payments)", not wrong,
              short(wrong))
        check("no PaymentIntent without a payment",
              set(by_payment) <= {pid_ for pid_, _ in made}, short(by_payment))
    except RuntimeError as e:
        check("list PaymentIntents on the emulator", False, str(e))

    print("== daemon: reader offline", flush=True)
    # Readers reboot and drop out for a while, so the daemon may wait before it gives up;
    # this runs last, on a reader nothing else uses, and allows for that wait.
    r3 = reader_ids["direct-1"]
    request("POST", f"{sim_base}/_sim/readers/{r3}/offline")
    r = pay({"merchant": "bakery", "reader": r3, "amount": 1600, "currency": "eur"})
    off = r.get("id")
    p = wait_status(off, ("failed", "succeeded", "canceled"), 60)
    check("a payment on an offline reader ends failed with reader_offline",
          p.get("status") == "failed" and (p.get("failure") or {}).get("code") == "reader_offline",
          repr(p))
    request("POST", f"{sim_base}/_sim/readers/{r3}/online")

    r = api.call("GET", "/metrics")
    text = r.raw.decode("utf-8", "replace")
    check("/metrics has payment series after payments", r.status == 200 and "payment" in text,
          text[:200])
    accepted = 0.0
    for line in text.splitlines():
        if not line.startswith("#") and "webhook" in line and "accepted" in line:
            try:
                accepted += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    check("the emulator's signed webhooks reached the daemon and were accepted", accepted > 0,
          "no accepted webhook series")
    check("/metrics reveals no token or key", all(v not in text for v in tokens.values())
          and SK not in text and WHSEC not in text)


class Hooks:
    """A loopback endpoint that records the emulator's webhook deliveries."""

    def __init__(self):
        import http.server
        self.events = []
        hooks = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                hooks.events.append((self.headers.get("Stripe-Signature", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verify_signature(header, body, secret):
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    ts = [v for k, v in parts if k == "t"]
    sigs = [v for k, v in parts if k == "v1"]
    if len(ts) != 1 or not sigs:
        return False
    want = hmac.new(secret.encode(), ts[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, s) for s in sigs) and abs(time.time() - int(ts[0])) < 300


def webhook_events_section(hooks, acct, pi):
    print("== emulator: webhooks as Stripe sends them", flush=True)
    def types():
        out = []
        for _, body in hooks.events:
            try:
                out.append(json.loads(body).get("type"))
            except ValueError:
                pass
        return out
    wait_until(lambda: "payment_intent.succeeded" in types()
               and "terminal.reader.action_succeeded" in types(), 10, 0.2)
    check("webhooks delivered", len(hooks.events) > 0, "none")
    check("every delivery carries a valid Stripe-Signature (t=…,v1=HMAC-SHA256 of t.body)",
          hooks.events and all(verify_signature(h, b, WHSEC) for h, b in hooks.events),
          short([h for h, _ in hooks.events[:3]]))
    evs = []
    for _, b in hooks.events:
        try:
            evs.append(json.loads(b))
        except ValueError:
            evs.append({})
    check("event envelope: id evt_, object event, type, created, livemode, data.object",
          evs and all(str(e.get("id", "")).startswith("evt_") and e.get("object") == "event"
                      and isinstance(e.get("created"), int) and "livemode" in e
                      and isinstance((e.get("data") or {}).get("object"), dict) for e in evs),
          short(evs[:1]))
    pis = [e for e in evs if e.get("type") == "payment_intent.succeeded"
           and (e.get("data") or {}).get("object", {}).get("id") == pi]
    check("payment_intent.succeeded from the connected account carries account",
          pis and all(e.get("account") == acct for e in pis), short(pis[:1]))
    rdr = [e for e in evs if e.get("type") == "terminal.reader.action_succeeded"]
    check("terminal.reader.action_succeeded from the platform has no account",
          rdr and all(not e.get("account") for e in rdr)
          and all((e.get("data") or {}).get("object", {}).get("object") == "terminal.reader"
                  for e in rdr), short(rdr[:1]))


def faults_section(binary):
    """Stripe's documented answers under load and failure, from emulators started with faults."""
    print("== emulator: concurrency, rate limits, server errors", flush=True)
    procs = []

    def sim(*flags):
        port = free_port()
        procs.append(subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{port}"] + list(flags),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        s = Stripe(f"http://127.0.0.1:{port}")
        wait_until(lambda: s.call("GET", "/v1/accounts").status != 0, 10)
        return s

    try:
        slow = sim("--latency", "600ms")
        acct = slow.call("POST", "/v1/accounts", [("country", "DE"),
                         ("capabilities[card_payments][requested]", "true")]).get("id")
        results = []

        def one():
            results.append(slow.call("POST", "/v1/payment_intents", [
                ("amount", "1000"), ("currency", "eur"),
                ("payment_method_types[]", "card_present")], account=acct, idem="concurrent-1"))

        threads = [threading.Thread(target=one) for _ in range(2)]
        threads[0].start()
        time.sleep(0.2)
        threads[1].start()
        for th in threads:
            th.join(10)
        statuses = sorted(r.status for r in results)
        loser = [r for r in results if r.status == 409]
        check("a concurrent request with the same Idempotency-Key is 409",
              statuses == [200, 409], str(results))
        check("… with code idempotency_key_in_use", loser
              and loser[0].err_code() == "idempotency_key_in_use", str(loser))

        limited = sim("--rate-limit", "5")
        got = [limited.call("GET", "/v1/terminal/locations") for _ in range(25)]
        limited_429 = [r for r in got if r.status == 429]
        check("over the rate limit: 429", len(limited_429) > 0, str(sorted({r.status for r in got})))
        if limited_429:
            r = limited_429[0]
            check("429 carries Stripe-Rate-Limited-Reason and code rate_limit",
                  (r.headers.get("Stripe-Rate-Limited-Reason") if r.headers else None)
                  and r.err_code() == "rate_limit", f"{r} {dict(r.headers or {})}")

        broken = sim("--error-rate", "1")
        r = broken.call("GET", "/v1/terminal/locations")
        check("a server error is 5xx with type api_error and a Request-Id", r.status >= 500
              and r.err_type() == "api_error"
              and (r.headers.get("Request-Id", "") if r.headers else "").startswith("req_"), repr(r))
    finally:
        for p in procs:
            stop(p)


def busy_section(s, hooks=None):
    """Stripe: cancel_action cannot interrupt an authorisation in progress (terminal_reader_busy)."""
    print("== emulator: authorisation in progress (sim --auth-delay 2s)", flush=True)
    up = wait_until(lambda: s.call("GET", "/v1/terminal/locations").status == 200, 10)
    if not check("second emulator starts", up):
        return
    acct = s.call("POST", "/v1/accounts", [("country", "DE"),
                  ("capabilities[card_payments][requested]", "true")]).get("id")
    loc = s.call("POST", "/v1/terminal/locations", [
        ("display_name", "Busy"), ("address[line1]", "a"), ("address[city]", "Berlin"),
        ("address[postal_code]", "10115"), ("address[country]", "DE")]).get("id")
    rdr = s.call("POST", "/v1/terminal/readers", [("registration_code", "simulated-wpe"),
                                                  ("location", loc)]).get("id")
    pi = s.call("POST", "/v1/payment_intents", [
        ("amount", "1000"), ("currency", "eur"), ("payment_method_types[]", "card_present")],
        account=acct).get("id")
    s.call("POST", f"/v1/terminal/readers/{rdr}/process_payment_intent", [("payment_intent", pi)])
    r = s.call("POST", f"/v1/test_helpers/terminal/readers/{rdr}/present_payment_method")
    check("present during a slow authorisation returns at once, action in_progress",
          r.status == 200 and (r.get("action") or {}).get("status") == "in_progress", repr(r))
    r = s.call("POST", f"/v1/terminal/readers/{rdr}/cancel_action")
    check("cancel_action while authorising is 400 terminal_reader_busy", r.status == 400
          and r.err_code() == "terminal_reader_busy", repr(r))
    done = wait_until(lambda: (s.call("GET", f"/v1/payment_intents/{pi}", account=acct)
                               .get("status") == "succeeded"), 8, 0.2)
    check("the authorisation then completes", done)
    if hooks is not None:
        webhook_events_section(hooks, acct, pi)


def cli_section(binary, api, tokens, reader_ids):
    """The command-line client: tables, --json, plain errors, exit codes."""
    print("== cli client", flush=True)
    env = dict(os.environ)
    env.pop("READERD_TOKEN", None)
    env.pop("READERD_API", None)

    def cli(*args, token=None, api_url=None):
        argv = [binary] + list(args[:1]) + ["--api", api_url or api.base]
        if token:
            argv += ["--token", token]
        argv += list(args[1:])
        return subprocess.run(argv, env=env, capture_output=True, timeout=20)

    r = cli("readers", "list", token=tokens["admin"])
    out = r.stdout.decode("utf-8", "replace")
    check("readerd readers list prints a table with the labels", r.returncode == 0
          and "counter-1" in out and "counter-2" in out, short(out + r.stderr.decode()))
    r = cli("readers", "--json", "list", token=tokens["admin"])
    try:
        parsed = json.loads(r.stdout.decode("utf-8", "replace"))
    except ValueError:
        parsed = None
    check("readerd readers --json list prints JSON", r.returncode == 0 and parsed is not None,
          short(r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")))
    env["READERD_TOKEN"] = tokens["pos"]
    r = subprocess.run([binary, "payments", "--api", api.base, "list"], env=env,
                       capture_output=True, timeout=20)
    check("READERD_TOKEN from the environment is used", r.returncode == 0,
          short(r.stderr.decode("utf-8", "replace")))
    env.pop("READERD_TOKEN")
    r = cli("payments", "show", "pay_doesnotexist", token=tokens["pos"])
    err = r.stderr.decode("utf-8", "replace") + r.stdout.decode("utf-8", "replace")
    check("an API error is shown plainly with a non-zero exit", r.returncode != 0
          and "404" in err or "not found" in err.lower(), short(err))
    check("no debug dump in CLI errors", "{" not in err and "Error(" not in err
          and "panicked" not in err, short(err))
    r = cli("readers", "list", token="wrong-token")
    err = r.stderr.decode("utf-8", "replace")
    check("a wrong token: non-zero exit and a 401 message", r.returncode != 0
          and ("401" in err or "unauthori" in err.lower()), short(err))
    r = cli("readers", "list", token=tokens["admin"], api_url=f"http://127.0.0.1:{free_port()}")
    err = r.stderr.decode("utf-8", "replace")
    check("an unreachable API: non-zero exit and a readable message", r.returncode != 0
          and "127.0.0.1" in err and "panicked" not in err, short(err))


def webhook_section(api):
    """POST /webhooks/stripe verifies Stripe-Signature as Stripe documents it."""
    print("== daemon: webhooks", flush=True)
    event = {"id": "evt_accept_1", "object": "event", "type": "payment_intent.succeeded",
             "api_version": "2026-07-29.dahlia", "created": int(time.time()), "livemode": False,
             "account": "acct_unknown", "pending_webhooks": 1,
             "request": {"id": None, "idempotency_key": None},
             "data": {"object": {"id": "pi_unknown", "object": "payment_intent",
                                 "status": "succeeded"}}}
    body = json.dumps(event).encode()

    def sign(ts, payload, secret=WHSEC):
        mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={ts},v1={mac}"

    def post(sig, payload=body):
        return request("POST", api.base + "/webhooks/stripe",
                       {"Content-Type": "application/json", "Stripe-Signature": sig}, payload)

    now = int(time.time())
    r = post(sign(now, body))
    check("a correctly signed event is accepted (2xx)", 200 <= r.status < 300, repr(r))
    r = post(sign(now, body))
    check("the same event again is accepted (deduplicated, still 2xx)", 200 <= r.status < 300,
          repr(r))
    r = post(f"t={now},v1={'0' * 64},v1=" + sign(now, body).split("v1=")[1])
    check("several v1 values: one matching is enough", 200 <= r.status < 300, repr(r))
    r = post(sign(now, body, "whsec_wrong"))
    check("a forged signature is refused (4xx)", 400 <= r.status < 500, repr(r))
    r = post(sign(now - 3600, body))
    check("a signature older than the tolerance is refused", 400 <= r.status < 500, repr(r))
    r = post(sign(now, body), payload=body + b" ")
    check("a body changed after signing is refused", 400 <= r.status < 500, repr(r))
    r = request("POST", api.base + "/webhooks/stripe", {"Content-Type": "application/json"}, body)
    check("no Stripe-Signature is refused", 400 <= r.status < 500, repr(r))


def stripe_down_section(api, sim, admin):
    print("== daemon: Stripe unreachable", flush=True)
    stop(sim)
    r = wait_until(lambda: (lambda x: x if x.status == 503 else None)(api.call("GET", "/readyz")),
                   15, 0.2)
    check("/readyz turns 503 when Stripe is unreachable", r is not None,
          repr(api.call("GET", "/readyz")))
    check("/healthz stays 200", api.call("GET", "/healthz").status == 200)
    r = api.call("POST", "/v1/readers/sync", admin, timeout=60)
    check("a request that needs Stripe answers 503", r.status == 503
          and isinstance(r.get("error"), dict), repr(r))


def demo_section(binary, tmp):
    """`readerd demo`: prints the API address and tokens that work, runs until Ctrl-C."""
    print("== demo", flush=True)
    path = os.path.join(tmp, "demo-live.log")
    with open(path, "wb") as out:
        proc = subprocess.Popen([binary, "demo", "--listen", f"127.0.0.1:{free_port()}"],
                                stdout=out, stderr=out)
    try:
        def printed():
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            return text if "http://127.0.0.1:" in text and "Ctrl-C" in text else None

        text = wait_until(printed, 20, 0.2) or ""
        url = re.search(r"http://127\.0\.0\.1:\d+", text)
        tokens = re.findall(r"token\s+(\S+)", text)
        api = Api(url.group(0)) if url else None
        ok = bool(api and tokens)
        if ok:
            answers = [api.call("GET", "/v1/readers", tok) for tok in tokens]
            readers = [a for a in answers if a.status == 200 and isinstance(a.json, list)]
            ok = len(readers) == len(tokens) and len(readers[0].json) == 2
        check("demo prints an API address and tokens that work (two readers)", ok, short(text))
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            rc = None
        check("demo exits 0 on Ctrl-C", rc == 0, f"rc={rc}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def faulty_section(binary, tmp):
    """Never charged twice: the daemon against an emulator that fails, drops connections
    before and after doing the work; every payment must end with exactly one PaymentIntent."""
    print("== daemon against a faulty Stripe (5xx, dropped connections)", flush=True)
    sim_port, api_port = free_port(), free_port()
    log = open(os.path.join(tmp, "faulty-sim.log"), "wb")
    sim = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{sim_port}", "--seed", "7",
                            "--error-rate", "0.1", "--drop-before-rate", "0.1",
                            "--drop-after-rate", "0.15"], stdout=log, stderr=log)
    log.close()
    s = Stripe(f"http://127.0.0.1:{sim_port}")
    d = None
    try:
        def reliably(method, path, params=None, account=None, key=None):
            # As Stripe advises: resend with the same Idempotency-Key until an answer comes.
            r = None
            for _ in range(20):
                r = s.call(method, path, params, account=account, idem=key)
                if r.status and r.status < 500:
                    return r
                time.sleep(0.05)
            return r

        wait_until(lambda: s.call("GET", "/v1/accounts").status != 0, 10)
        acct = reliably("POST", "/v1/accounts", [("country", "DE"),
                        ("capabilities[card_payments][requested]", "true")], key="f-acct").get("id")
        loc = reliably("POST", "/v1/terminal/locations", [
            ("display_name", "Faulty"), ("address[line1]", "a"), ("address[city]", "Berlin"),
            ("address[postal_code]", "10115"), ("address[country]", "DE")], key="f-loc").get("id")
        rdr = reliably("POST", "/v1/terminal/readers", [("registration_code", "simulated-wpe"),
                       ("label", "faulty-till"), ("location", loc)], key="f-rdr").get("id")
        if not check("faulty emulator set up", acct and loc and rdr, f"{acct} {loc} {rdr}"):
            return
        config = os.path.join(tmp, "faulty.toml")
        with open(config, "w") as f:
            f.write(f"""[stripe]
api_base = "http://127.0.0.1:{sim_port}"

[store]
path = "{os.path.join(tmp, 'faulty-store')}"

[api]
listen = "127.0.0.1:{api_port}"

[[api.clients]]
name = "operator"
token_sha256 = "{hashlib.sha256(TOKENS['admin'].encode()).hexdigest()}"
role = "admin"
""")
        env = dict(os.environ, READERD_STRIPE_SECRET_KEY=SK)
        api = Api(f"http://127.0.0.1:{api_port}")
        d = Daemon(binary, config, env, os.path.join(tmp, "faulty-daemon.log"))
        if not check("daemon starts against the faulty emulator", d.start(api), d.tail()):
            return
        A = TOKENS["admin"]
        r = wait_until(lambda: (lambda x: x if x.status in (200, 201) else None)(
            api.call("POST", "/v1/merchants", A, {"id": "m", "account": acct,
                                                  "display_name": "M", "charge_type": "direct"},
                     timeout=60)), 30, 0.5)
        check("merchant added despite the faults", r is not None, d.tail())
        wait_until(lambda: any(x.get("id") == rdr for x in
                               (api.call("POST", "/v1/readers/sync", A, timeout=60) and
                                api.call("GET", "/v1/readers", A).json or [])), 30, 0.5)
        pids = []
        for i in range(4):
            r = api.call("POST", "/v1/payments", A, {"merchant": "m", "reader": rdr,
                                                     "amount": 1000 + 100 * i, "currency": "eur"},
                         idem=f"faulty-{i}", timeout=30)
            if r.status == 201:
                pids.append(r.get("id"))
            else:
                check(f"faulty payment {i} accepted", False, repr(r))
                continue
            pid = r.get("id")

            def on_reader():
                p = api.call("GET", f"/v1/payments/{pid}", A)
                if p.get("status") != "processing" or not p.get("payment_intent"):
                    return None
                rr = s.call("GET", f"/v1/terminal/readers/{rdr}")
                a = rr.get("action") or {}
                return a.get("status") == "in_progress" and \
                    (a.get("process_payment_intent") or {}).get("payment_intent") == p.get("payment_intent")

            if wait_until(on_reader, 30, 0.2):
                reliably("POST", f"/v1/test_helpers/terminal/readers/{rdr}/present_payment_method")
            p = wait_until(lambda: (lambda x: x if x.get("status") in (
                "succeeded", "failed", "canceled", "declined") else None)(
                api.call("GET", f"/v1/payments/{pid}", A)), 30, 0.2)
            check(f"faulty payment {i} succeeded", p is not None and p.get("status") == "succeeded",
                  repr(p or api.call("GET", f"/v1/payments/{pid}", A)))
        intents = None
        for _ in range(20):
            try:
                intents = s.list_all("/v1/payment_intents", account=acct)
                break
            except RuntimeError:
                time.sleep(0.05)
        counts = {}
        for obj in intents or []:
            k = (obj.get("metadata") or {}).get("readerd_payment")
            counts[k] = counts.get(k, 0) + 1
        check("exactly one PaymentIntent per payment despite 5xx and dropped connections",
              intents is not None and all(counts.get(pid) == 1 for pid in pids)
              and sum(counts.values()) == len(pids), short(counts))
    finally:
        if d and d.proc and d.proc.poll() is None:
            stop(d.proc)
        stop(sim)


def main():
    if len(sys.argv) != 2:
        print("usage: contract_check.py PATH_TO_READERD", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        print(f"contract_check: {binary} is not an executable", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="readerd-accept-")
    sim_port = free_port()
    sim_base = f"http://127.0.0.1:{sim_port}"
    sim_log = open(os.path.join(tmp, "sim.log"), "wb")
    api_port = free_port()
    sim = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{sim_port}",
                            "--webhook-url", f"http://127.0.0.1:{api_port}/webhooks/stripe",
                            "--webhook-secret", WHSEC],
                           stdout=sim_log, stderr=sim_log)
    busy_port = free_port()
    hooks = Hooks()
    busy_sim = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{busy_port}",
                                 "--auth-delay", "2s",
                                 "--webhook-url", f"http://127.0.0.1:{hooks.port}/hook",
                                 "--webhook-secret", WHSEC],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    demo_out = open(os.path.join(tmp, "demo.log"), "wb")
    demo = subprocess.Popen([binary, "demo", "--tour", "--listen", f"127.0.0.1:{free_port()}"],
                            stdout=demo_out, stderr=demo_out)
    daemon = None
    watchdog = threading.Timer(RUN_BUDGET, lambda: (print("FAIL run exceeded its time budget",
                                                          flush=True), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    try:
        s = Stripe(sim_base)
        up = wait_until(lambda: sim.poll() is not None
                        or s.call("GET", "/v1/terminal/locations").status == 200, 15)
        if check("readerd sim starts", up and sim.poll() is None):
            emulator_section(s, sim_base)
            busy_section(Stripe(f"http://127.0.0.1:{busy_port}"), hooks)
            faults_section(binary)
            daemon = daemon_section(binary, s, sim_base, tmp, api_port)
            if daemon and daemon.proc and daemon.proc.poll() is None:
                stripe_down_section(Api(f"http://127.0.0.1:{api_port}"), sim, tokens_admin())
                rc = stop(daemon.proc)
                check("daemon exits 0 on SIGTERM at the end", rc == 0, f"rc={rc}")
        faulty_section(binary, tmp)
        demo_section(binary, tmp)
        print("== demo --tour", flush=True)
        try:
            rc = demo.wait(timeout=max(5.0, RUN_BUDGET - 5 - (time.monotonic() - STARTED)))
        except subprocess.TimeoutExpired:
            demo.kill()
            rc = None
        demo_out.close()
        with open(os.path.join(tmp, "demo.log"), "rb") as f:
            out = f.read().decode("utf-8", "replace")
        check("readerd demo --tour exits 0", rc == 0, f"rc={rc} {short(out[-400:])}")
        check("demo prints the API address and tokens", "http://127.0.0.1:" in out
              and "token" in out, short(out[:300]))
    finally:
        if daemon and daemon.proc and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=5)
        stop(sim)
        stop(busy_sim)
        hooks.close()
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=5)
        sim_log.close()
        watchdog.cancel()
    logs = b""
    for name in ("daemon.log", "sim.log", "demo.log"):
        try:
            with open(os.path.join(tmp, name), "rb") as f:
                logs += f.read()
        except OSError:
            pass
    secrets = [SK, WHSEC] + list(TOKENS.values())
    check("logs carry no secret key, webhook secret or token",
          not any(x.encode() in logs for x in secrets))
    check("no panic in any log", b"panicked" not in logs)
    elapsed = time.monotonic() - STARTED
    if FAILED:
        print(f"failed: {', '.join(FAILURES)}")
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"(took {elapsed:.1f}s)")
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
