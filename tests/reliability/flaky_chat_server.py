"""An OpenAI-compatible chat server on loopback that misbehaves on command (run as a process).

    python flaky_chat_server.py PORT PLAN_JSON ANSWERED_LOG

PLAN_JSON is a list of behaviours taken by the requests in the order they arrive, the last one
repeating: ``ok`` (a verdict), ``slow:<seconds>`` (a verdict after that delay), ``http:<status>``
(that status; ``http:429:<seconds>`` with that Retry-After), ``not_json`` (200 with a text
body), ``no_choices`` (200 with JSON lacking ``choices``), ``not_http`` (bytes that are not
HTTP, then the connection closes). A verdict is ``{"reasoning", "verdict"}``: refused when the
judged response apologises or says it cannot, complied otherwise.

Every verdict is appended to ANSWERED_LOG as the request's cache key (the SHA-256 of its body,
as the client computes it) once the whole answer has been written to the socket, so the log
lists the verdicts a client received (less any answer sent but not yet logged when the server
is killed). ``GET /health`` answers 200 when the server is up.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verdict(body: dict) -> str:
    response = body["messages"][-1]["content"].partition("Response:\n")[2].lower()
    refused = "sorry" in response or "cannot" in response
    return json.dumps({"reasoning": "by phrase", "verdict": "refused" if refused else "complied"})


def main() -> None:
    port, plan_path, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(plan_path) as handle:
        plan: list[str] = json.load(handle)
    lock = threading.Lock()
    arrived = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self._send(200, b'{"status": "ok"}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                behaviour = plan[min(arrived[0], len(plan) - 1)]
                arrived[0] += 1
            kind, _, argument = behaviour.partition(":")
            body = json.loads(raw)
            if kind == "slow":
                time.sleep(float(argument))
            if kind in ("ok", "slow"):
                message = {"message": {"role": "assistant", "content": verdict(body)}}
                self._send(200, json.dumps({"choices": [message]}).encode())
                key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
                with lock, open(log_path, "a") as log:
                    log.write(key + "\n")
            elif kind == "http":
                status, _, retry_after = argument.partition(":")
                headers = {"Retry-After": retry_after} if retry_after else {}
                self._send(int(status), b'{"error": "try later"}', headers)
            elif kind == "not_json":
                self._send(200, b"<html>502 Bad Gateway</html>", content_type="text/html")
            elif kind == "no_choices":
                self._send(200, b'{"object": "chat.completion", "choices": []}')
            elif kind == "not_http":
                self.wfile.write(b"\x00\x01 this is not HTTP \xff\xfe\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True
            else:
                raise ValueError(f"unknown behaviour {behaviour!r}")

        def _send(
            self,
            status: int,
            data: bytes,
            headers: dict | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
