"""A stand-in for llama.cpp's llama-server / llama-bench that replays what the real binaries
answered (recording.json, written by tools/record_llama_bin.py from the binaries that
``make llama-tools`` builds). Stdlib only; run as

    python fake_llama.py server|bench RECORDING [the binary's own arguments...]

server: binds --host/--port (port 0: a free one) as llama-server does, logs the real server's
"listening on" line, answers /health (503 "Loading model" twice, then 200), /props and
/completion (the recorded server-sent events of the request with the same prompt and
n_predict, chunked, then the connection closed as the real server closes it), and exits on
SIGTERM. bench: prints the
recorded llama-bench JSON. FAKE_LLAMA_MODE=die exits 1 at start after the real server's
model-load error lines; FAKE_LLAMA_MODE=hang never becomes healthy. FAKE_LLAMA_PIDFILE: write
the process id there first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def _arg(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def serve(rec: dict, argv: list[str], mode: str) -> int:
    host, port = _arg(argv, "--host", "127.0.0.1"), int(_arg(argv, "--port", "8080"))
    log = rec["server"]["log_head"]
    for line in log:
        print(line, file=sys.stderr, flush=True)
    if mode == "die":
        for line in rec["server"]["load_error_log"]:
            print(line, file=sys.stderr, flush=True)
        return int(rec["server"].get("load_error_exit_code") or 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        print(
            f"srv          start: couldn't bind HTTP server socket, hostname: {host}, port: {port}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    sock.listen(16)
    port = sock.getsockname()[1]
    health = {"polls": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # the real server logs its own way
            pass

        def _json(self, status: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                health["polls"] += 1
                if mode == "hang" or health["polls"] <= 2:
                    err = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
                    return self._json(503, {"error": err})
                return self._json(200, {"status": "ok"})
            if self.path == "/props":
                return self._json(200, rec["server"]["props"])
            return self._json(404, {"error": {"code": 404, "message": "File Not Found"}})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            for c in rec["server"]["completions"]:
                if c["request"]["prompt"] == req["prompt"] and (
                    c["request"]["n_predict"] == req["n_predict"]
                ):
                    break
            else:
                return self._json(400, {"error": {"code": 400, "message": "not recorded"}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in c["events"]:
                chunk = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True  # as llama-server does after a streamed answer

    server = HTTPServer((host, port), Handler, bind_and_activate=False)
    server.socket = sock
    line = rec["server"].get("listening_line") or "main: server is listening on http://H:8080"
    line = re.sub(r"http://[^\s]+:\d+", f"http://{host}:{port}", line)
    print(line, file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()
    return 0


def main(argv: list[str]) -> int:
    kind, recording, args = argv[0], argv[1], argv[2:]
    if os.environ.get("FAKE_LLAMA_PIDFILE"):
        with open(os.environ["FAKE_LLAMA_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
    with open(recording, encoding="utf-8") as f:
        rec = json.load(f)
    mode = os.environ.get("FAKE_LLAMA_MODE", "ok")
    if kind == "server":
        return serve(rec, args, mode)
    if mode == "die":
        print("error: failed to load model 'x.gguf'", file=sys.stderr)
        return 1
    time.sleep(0.05)
    print(json.dumps(rec["bench"]["rows"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
