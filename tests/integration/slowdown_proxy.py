"""A loopback HTTP proxy in front of an S3 server that throttles: every `every`-th request
is answered `503 SlowDown` (as AWS S3 does under load) instead of being forwarded.

    python slowdown_proxy.py LISTEN_PORT UPSTREAM_PORT EVERY COUNT_FILE

Requests are forwarded byte for byte (the Host header too, so SigV4 signatures still
match); COUNT_FILE holds how many 503s were served so far.
"""

from __future__ import annotations

import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class Throttle:
    def __init__(self, every: int, count_file: Path) -> None:
        self.every, self.count_file = every, count_file
        self.seen = self.served = 0
        self.lock = threading.Lock()

    def refuses(self) -> bool:
        with self.lock:
            self.seen += 1
            if self.seen % self.every:
                return False
            self.served += 1
            self.count_file.write_text(str(self.served))
            return True


def handler(upstream: int, throttle: Throttle) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if throttle.refuses():
                self.answer(503, [("Content-Type", "application/xml")], SLOWDOWN)
                return
            connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
            connection.request(self.command, self.path, body=body, headers=dict(self.headers))
            response = connection.getresponse()
            data = response.read()
            dropped = ("transfer-encoding", "connection") + (() if self.command == "HEAD"
                                                              else ("content-length",))
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in dropped]
            connection.close()
            self.answer(response.status, headers, data)

        def answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if self.command != "HEAD" or status >= 300:  # a HEAD keeps the object's length
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = relay

    return Forward


def main() -> None:
    listen, upstream, every, count_file = sys.argv[1:5]
    throttle = Throttle(int(every), Path(count_file))
    Path(count_file).write_text("0")
    ThreadingHTTPServer(("127.0.0.1", int(listen)), handler(int(upstream), throttle)).serve_forever()


if __name__ == "__main__":
    main()
