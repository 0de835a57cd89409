#!/usr/bin/env python3
"""One instance of the example's service: reads its config once, at start, and answers
/health with 200 {"status": "ok", "release": N} — or 503 when the config says it is
broken. Loopback only."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, config = int(sys.argv[1]), sys.argv[2]
with open(config) as f:
    conf = json.load(f)


class Health(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        ok = conf.get("healthy", True)
        body = json.dumps({"status": "ok" if ok else "broken", "release": conf.get("release")}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", port), Health).serve_forever()
