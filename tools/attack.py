#!/usr/bin/env python3
"""The HTTP attacks of issue 12, run against a started example CRM.

    cargo run --release --example crm -- --listen 127.0.0.1:8080 --db /tmp/attack.sqlite \
        --audit-log /tmp/attack.jsonl --now 2024-01-01T09:00:00Z
    python3 tools/attack.py --url http://127.0.0.1:8080 --log /tmp/attack.jsonl

Each attack is tried as an attacker would and passes if the server refuses it the way it
must (and, with --log, if the decision log says so at a bounded cost). Prints one line per
attack and then `N passed, M failed`; exits 1 if any failed. Only the standard library.
The server must decide at a time when the sample's former member m-00004 has left
(`--now` 2024 or later, or the clock). The attacks write to the database they are given
(one member's address): point the CRM at a copy.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse

COMPLIANCE = 'Staff::"s-compliance"'
MEMBERSHIP = 'Staff::"s-membership"'
DPO = 'Staff::"s-dpo"'
FORMER = "m-00004"
MEMBER = "m-00001"


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def __repr__(self):
        return f"{self.status} {self.body[:160]!r}"


class Connection:
    """One keep-alive HTTP/1.1 connection, raw bytes: the attacks send what no client
    library would."""

    def __init__(self, host, port, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, method, path, headers=(), body=b""):
        lines = [f"{method} {path} HTTP/1.1", "Host: crm"]
        lines += [f"{n}: {v}" for n, v in headers]
        if body or method not in ("GET",):
            lines.append(f"Content-Length: {len(body)}")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return self.read_reply()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def read_reply(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(status, headers, body)

    def close(self):
        self.sock.close()


class Attacks:
    def __init__(self, url, log):
        parsed = urllib.parse.urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.log = log
        self.results = []

    def conn(self, timeout=30):
        return Connection(self.host, self.port, timeout)

    def get(self, path, principal=None, headers=()):
        c = self.conn()
        try:
            hs = list(headers)
            if principal:
                hs.append(("X-Principal", principal))
            return c.request("GET", path, hs)
        finally:
            c.close()

    def check(self, name, ok, detail=""):
        self.results.append(ok)
        print(f"{'pass' if ok else 'FAIL'}  {name}{'' if ok else ': ' + detail}")

    def log_size(self):
        return os.path.getsize(self.log) if self.log else 0

    def logged(self, request_id):
        """The log's records of `request_id` (with --log), as raw lines."""
        if not self.log or not request_id:
            return []
        with open(self.log, "rb") as f:
            return [l for l in f if f'"request_id":"{request_id}"'.encode() in l]

    def refused_and_logged(self, name, reply, status, small=1000):
        """`reply` has `status`, a JSON body with its request id and no member data, and
        (with --log) exactly one log record under `small` bytes."""
        body = reply.json() or {}
        rid = reply.headers.get("x-request-id", "")
        ok = reply.status == status and body.get("request_id") == rid and rid != ""
        ok = ok and "fields" not in body and "members" not in body
        detail = repr(reply)
        if ok and self.log:
            lines = self.logged(rid)
            ok = len(lines) == 1 and len(lines[0]) < small
            detail = f"{len(lines)} log records, {[len(l) for l in lines]} bytes"
        self.check(name, ok, detail)

    # -------------------------------------------------------------- the attacks

    def values_through_a_write_action(self):
        for action in ("erase", "update", "contact_phone"):
            reply = self.get(f"/members/{FORMER}?action={action}", COMPLIANCE)
            self.refused_and_logged(f"GET ?action={action} shows no value (item 1)", reply, 400)

    def writes_past_the_read_limit(self):
        c = self.conn()
        try:
            hs = [("X-Principal", MEMBERSHIP)]
            reads = 0
            while reads < 100_000:
                r = c.request("GET", f"/members/{MEMBER}", hs)
                if r.status != 200:
                    break
                reads += 1
            cut = r.status == 403
            body = json.dumps({"address": "1 Attack Road, London"}).encode()
            patch = c.request("PATCH", f"/members/{MEMBER}", hs, body)
            erase = c.request("DELETE", f"/members/{MEMBER}", hs)
        finally:
            c.close()
        self.check(
            f"past the hourly limit ({reads} reads), PATCH and DELETE are refused (item 1)",
            cut and patch.status == 403 and erase.status == 403,
            f"read {r!r}, patch {patch!r}, delete {erase!r}",
        )

    def flood_the_log_without_a_principal(self):
        before = self.log_size()
        path = f"/members/{MEMBER}?" + "&".join(f"p{i}=1" for i in range(3000))
        reply = self.get(path)
        self.refused_and_logged("a 20 KB query string: 414, a small record (item 4)", reply, 414)
        reply = self.get(f"/members/{MEMBER}", headers=[("X-Pad", "x" * 20_000)])
        self.refused_and_logged("20 KB of headers: 431, a small record (item 4)", reply, 431)
        reply = self.get(f"/members/{MEMBER}?clp=" + "x" * 6000)
        self.refused_and_logged("a 6 KB parameter, no principal: 401, small record (item 4)", reply, 401)
        if self.log:
            per = (self.log_size() - before) / 3
            self.bytes_per_rejection = per
            self.check(f"log bytes per unauthenticated rejection: {per:.0f} (item 4)", per < 1000)

    def wrong_method_and_route(self):
        c = self.conn()
        try:
            r = c.request("POST", f"/members/{MEMBER}", [("X-Principal", DPO)])
        finally:
            c.close()
        self.refused_and_logged("POST: 405 with a body, a request id and a record (item 10)", r, 405)
        self.refused_and_logged("an unknown route: 404, logged (item 10)", self.get("/admin"), 404)

    def malformed_http(self):
        before = self.log_size()
        c = self.conn()
        try:
            c.send_raw(b"GARBAGE \x01\x02 nonsense\r\n\r\n")
            r = c.read_reply()
        finally:
            c.close()
        time.sleep(0.2)
        grew = (not self.log) or self.log_size() > before
        self.check("malformed HTTP: 400 and a log record (item 10)", r.status == 400 and grew, repr(r))

    def unknown_principal(self):
        reply = self.get(f"/members/{MEMBER}", 'Staff::"s-nobody"')
        self.refused_and_logged("an unknown principal: 401, no data", reply, 401)

    def break_glass_without_a_reason(self):
        for reason in ("-", "%20%20", "aaaaaaaaaaaa"):
            reply = self.get(f"/members/{MEMBER}?reason={reason}", DPO)
            self.refused_and_logged(f"break-glass reason {reason!r}: 400", reply, 400)

    def slow_clients(self, n=400, within=15.0):
        slow = []
        try:
            for _ in range(n):
                c = self.conn(timeout=60)
                c.send_raw(b"GET /members/m-00001 HTTP/1.1\r\nHost: crm\r\nX-Princ")
                slow.append(c)
            start = time.monotonic()
            c = self.conn(timeout=60)
            try:
                r = c.request("GET", f"/members/{MEMBER}", [("X-Principal", DPO)])
            finally:
                c.close()
            took = time.monotonic() - start
            self.slow_client_wait = took
            self.check(
                f"{n} half-sent requests: a real client answered in {took:.2f} s (item 6)",
                r.status in (200, 403) and took < within,
                repr(r),
            )
            closed = 0
            for s in slow:
                try:
                    s.sock.settimeout(30)
                    while s.sock.recv(4096):
                        pass
                    closed += 1
                except (ConnectionError, OSError):
                    closed += 1
            self.check(f"the server closed all {n} slow connections (item 6)", closed == n)
        finally:
            for s in slow:
                s.close()

    def stalled_body(self):
        c = self.conn(timeout=60)
        try:
            c.send_raw(
                (
                    f"PATCH /members/{MEMBER} HTTP/1.1\r\nHost: crm\r\nX-Principal: {MEMBERSHIP}\r\n"
                    'Content-Length: 100\r\n\r\n{"email": '
                ).encode()
            )
            start = time.monotonic()
            r = c.read_reply()
            took = time.monotonic() - start
        finally:
            c.close()
        self.refused_and_logged(f"a body that never ends: 408 after {took:.1f} s (item 6)", r, 408)

    def run(self, slow):
        self.values_through_a_write_action()
        self.flood_the_log_without_a_principal()
        self.wrong_method_and_route()
        self.malformed_http()
        self.unknown_principal()
        self.break_glass_without_a_reason()
        if slow:
            self.slow_clients()
            self.stalled_body()
        # Last: it exhausts the membership team's hourly limit on this server.
        self.writes_past_the_read_limit()
        passed = sum(self.results)
        failed = len(self.results) - passed
        print(f"{passed} passed, {failed} failed")
        return failed == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the CRM's address")
    p.add_argument("--log", help="the CRM's decision log, to check what it records")
    p.add_argument("--no-slow", action="store_true", help="skip the slow-client attacks")
    args = p.parse_args()
    ok = Attacks(args.url, args.log).run(not args.no_slow)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
