"""A stateful HTTP service with a deliberately long warm-up: what live migration is for.

On start it does WARMUP_SECONDS (default 20) of real CPU work (building a table of primes and
a hash chain, standing in for loading a model or JIT-warming a JVM), then serves:

  GET  /healthz            200 once warm, 503 before (use it as the readiness probe)
  GET  /state              JSON: warm-up facts, boot id, pid, number of writes, uptime
  POST /write?key=K&value=V  stores K=V in memory; answers 200 with the write's sequence number
  GET  /read?key=K         the stored value (404 if none)
  GET  /dump               every stored key/value as JSON
  GET  /scratch            the scratch file's sha256, read through the descriptor it holds open
                           and through its path (both must match STATE's scratch_sha256)

Its state is only in memory, so a cold restart loses it and pays the warm-up again; a
restore keeps both. BALLAST_MB holds that much touched memory (for benchmarks): random bytes, as
incompressible as a real heap of data, or with BALLAST_KIND=repeating 64 random bytes over and over
(a compressor shrinks it a thousandfold; for a compressible variant beside the headline); SCRATCH_MB writes
that much random data to SCRATCH_DIR/scratch.bin (an emptyDir, in the benchmark) and keeps it
open, as a cache or a database file would be. It runs on
the Python standard library alone, inside an image with no pip.
"""

import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT = int(os.environ.get("PORT", "8080"))
WARMUP_SECONDS = float(os.environ.get("WARMUP_SECONDS", "20"))
BALLAST_MB = int(os.environ.get("BALLAST_MB", "0"))
BALLAST_KIND = os.environ.get("BALLAST_KIND", "random")  # random (incompressible) | repeating (compressible)
if BALLAST_KIND not in ("random", "repeating"):
    sys.exit(f"BALLAST_KIND must be random or repeating, not {BALLAST_KIND!r}")
SCRATCH_MB = int(os.environ.get("SCRATCH_MB", "0"))
SCRATCH_DIR = os.environ.get("SCRATCH_DIR", "/scratch")
SCRATCH: list = []  # the open scratch file, held for the process's life

STATE = {
    "boot_id": hashlib.sha256(f"{time.time()}-{os.getpid()}".encode()).hexdigest()[:16],
    "warm": False,
    "warmup_started": time.time(),
    "warmup_finished": None,
    "warmup_seconds": None,
    "primes": 0,
    "chain": "",
    "writes": 0,
}
DATA: dict = {}
LOCK = threading.Lock()
BALLAST: list = []


def warm_up() -> None:
    """Real work for WARMUP_SECONDS: a growing sieve and a hash chain."""
    deadline = time.time() + WARMUP_SECONDS
    chain = b"seed"
    limit = 10_000
    primes = 0
    while time.time() < deadline:
        sieve = bytearray([1]) * limit
        sieve[0:2] = b"\x00\x00"
        for i in range(2, int(limit**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
        primes = sum(sieve)
        for _ in range(200):
            chain = hashlib.sha256(chain).digest()
        limit = min(limit * 2, 2_000_000)
    for _ in range(BALLAST_MB):
        # 1 MiB of non-zero, non-shared pages each
        block = bytearray(os.urandom(1 << 20) if BALLAST_KIND == "random" else os.urandom(64) * (1 << 14))
        BALLAST.append(block)
    if SCRATCH_MB:
        digest = hashlib.sha256()
        scratch = open(os.path.join(SCRATCH_DIR, "scratch.bin"), "w+b")  # noqa: SIM115 (held open on purpose)
        for _ in range(SCRATCH_MB):
            block = os.urandom(1 << 20)  # incompressible, as real files are
            scratch.write(block)
            digest.update(block)
        scratch.flush()
        SCRATCH.append(scratch)
        STATE.update(scratch_mb=SCRATCH_MB, scratch_sha256=digest.hexdigest())
    STATE.update(
        warm=True,
        warmup_finished=time.time(),
        warmup_seconds=round(time.time() - STATE["warmup_started"], 3),
        primes=primes,
        chain=chain.hex()[:16],
    )
    print(f"warm after {STATE['warmup_seconds']}s ({primes} primes, ballast {BALLAST_MB} MiB)", flush=True)


def scratch_digests() -> dict:
    """The scratch file's sha256 through the held descriptor and through the path."""
    if not SCRATCH:
        return {"open": None, "path": None}
    out = {}
    for how in ("open", "path"):
        digest = hashlib.sha256()
        fd = SCRATCH[0].fileno() if how == "open" else os.open(os.path.join(SCRATCH_DIR, "scratch.bin"), os.O_RDONLY)
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            digest.update(chunk)
            offset += len(chunk)
        if how == "path":
            os.close(fd)
        out[how] = digest.hexdigest()
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # keep the log for the app's own lines
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/healthz":
            self._send(200 if STATE["warm"] else 503, {"warm": STATE["warm"]})
        elif url.path == "/state":
            with LOCK:
                self._send(200, dict(STATE, pid=os.getpid(), keys=len(DATA), ballast_mb=len(BALLAST)))
        elif url.path == "/read":
            key = query.get("key", [""])[0]
            with LOCK:
                found = key in DATA
                value = DATA.get(key)
            self._send(200 if found else 404, {"key": key, "value": value})
        elif url.path == "/scratch":
            self._send(200, scratch_digests())
        elif url.path == "/dump":
            with LOCK:
                self._send(200, dict(DATA))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path != "/write":
            self._send(404, {"error": "not found"})
            return
        if not STATE["warm"]:
            self._send(503, {"error": "warming up"})
            return
        key, value = query.get("key", [""])[0], query.get("value", [""])[0]
        with LOCK:
            DATA[key] = value
            STATE["writes"] += 1
            seq = STATE["writes"]
        self._send(200, {"ok": True, "seq": seq, "key": key})


def main() -> None:
    print(f"warming up for {WARMUP_SECONDS}s (boot {STATE['boot_id']})", flush=True)
    threading.Thread(target=warm_up, daemon=True).start()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    print(f"listening on :{PORT}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
