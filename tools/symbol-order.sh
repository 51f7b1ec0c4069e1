#!/usr/bin/env bash
# Makes extractors/link/symbol-order.txt again: the functions of the release binary that a
# one-task service executes (start-up, the first token, runs of a command task writing a RAW row
# each second, the idle loop), in the order callgrind first lists them. extractors/build.rs links
# them next to each other, so the service keeps fewer pages of the binary resident.
#
# Run after a change that renames or adds much code on that path (a stale list costs memory, not
# correctness): `bash tools/symbol-order.sh`, then rebuild. Needs valgrind and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p extractors --bin extractor-runtime
bin=$PWD/target/release/extractor-runtime
work=$(mktemp -d)
trap 'kill "$fake" 2>/dev/null || true; rm -rf "$work"' EXIT

# A fake IdP and CDF on loopback that accept every request.
cat > "$work/fake.py" <<'PY'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.path.endswith("/token")
        body = json.dumps({"access_token": "t", "expires_in": 3600} if token else {"items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$work/fake.py" > "$work/port" &
fake=$!
while [ ! -s "$work/port" ]; do sleep 0.1; done
uri="http://127.0.0.1:$(cat "$work/port")"
cat > "$work/one.yaml" <<YAML
version: 1
cognite:
  project: demo
  host: $uri
  idp-authentication: {client-id: c, secret: s, token-url: '$uri/token', scopes: [s]}
logger: {console: {level: error}}
tasks:
  - name: beat
    type: command
    schedule: {type: interval, expression: 1s}
    config:
      command: [sh, -c, 'echo {\"k\": \"\$(date +%s%N)\"}']
      records: ndjson
      destination: {type: raw, database: d, table: t, key: '{k}'}
YAML
timeout -s INT 25 valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    --demangle=no --compress-strings=no --dump-instr=no \
    "$bin" run -c "$work/one.yaml" > /dev/null 2>&1 || true
python3 - "$work/cg.out" extractors/link/symbol-order.txt <<'PY'
import sys
ob, seen, order = None, set(), []
for line in open(sys.argv[1]):
    if line.startswith("ob="):
        ob = line[3:].strip()
    elif line.startswith("fn=") and ob and ob.endswith("/extractor-runtime"):
        name = line[3:].strip()
        if name not in seen:
            seen.add(name)
            order.append(name)
open(sys.argv[2], "w").write("\n".join(order) + "\n")
print(f"{len(order)} functions -> {sys.argv[2]}")
PY
