#!/usr/bin/env bash
# Makes extractors/link/symbol-order.txt again: the functions of the release binary that a
# one-task service executes, as callgrind first lists them, in three runs against a fake IdP and
# CDF on loopback: an `http` task reading a source over TLS (the IdP and CDF over TLS too,
# trusted through cognite.connection.ca-file), with an ECDSA then an RSA certificate, then a
# `command` task over plain HTTP. Each
# writes a RAW row a second; each run covers start-up, the first token, runs and the idle loop.
# extractors/build.rs links the listed functions next to each other, so the service keeps fewer
# pages of the binary resident.
#
# Run after adding a dependency or changing a crate's version (they rename functions; .ci/run
# fails on a stale list), or much code on that path: `bash tools/symbol-order.sh`, then
# rebuild. Needs valgrind, python3 and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p extractors --bin extractor-runtime
bin=$PWD/target/release/extractor-runtime
work=$(mktemp -d)
fake=
trap 'if [ -n "$fake" ]; then kill "$fake" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# A CA and certificates it signed for 127.0.0.1: RSA (as Entra ID's) and ECDSA P-256 (as many
# other hosts'); their signatures are checked by different code.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=order-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san.ext"
for key in rsa ec; do
  case $key in
    rsa) newkey=(-newkey rsa:2048) ;;
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  esac
  openssl req "${newkey[@]}" -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/$key.key" -out "$work/$key.csr" 2>/dev/null
  openssl x509 -req -in "$work/$key.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/$key.pem" 2>/dev/null
done

# A fake IdP, CDF and source that accept every request (over TLS when given a certificate).
cat > "$work/fake.py" <<'PY'
import http.server, itertools, json, ssl, sys
keys = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/token"):
            body = {"access_token": "t", "expires_in": 3600}
        elif self.path == "/source":
            body = [{"k": next(keys)}]
        else:
            body = {"items": []}
        body = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
if len(sys.argv) > 1:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

# profile NAME CONFIG-BODY [FAKE-ARGS...]: runs the service under callgrind for 25 s.
profile() {
  local name=$1 body=$2
  shift 2
  python3 "$work/fake.py" "$@" > "$work/port" &
  fake=$!
  while [ ! -s "$work/port" ]; do sleep 0.1; done
  local port
  port=$(cat "$work/port")
  printf '%s\n' "${body//PORT/$port}" > "$work/$name.yaml"
  timeout -s INT 25 valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    --demangle=no --compress-strings=no --dump-instr=no \
    "$bin" run -c "$work/$name.yaml" > /dev/null 2>&1 || true
  kill "$fake"
  wait "$fake" 2>/dev/null || true
  fake=
  rm -f "$work/port"
}

# config_head SCHEME [CONNECTION]: the cognite and logger sections (IdP and CDF at the fake)
# and the start of the one task.
config_head() {
  printf '%s\n' "version: 1
cognite:
  project: demo
  host: $1://127.0.0.1:PORT
  idp-authentication: {client-id: c, secret: s, token-url: '$1://127.0.0.1:PORT/token', scopes: [s]}${2:+
  connection: $2}
logger: {console: {level: error}}
tasks:
  - name: beat
    schedule: {type: interval, expression: 1s}"
}

tls_config="$(config_head https "{ca-file: '$work/ca.pem'}")
    type: http
    config:
      url: https://127.0.0.1:PORT/source
      destination: {type: raw, database: d, table: t, key: k}"
for key in ec rsa; do
  profile "tls-$key" "$tls_config" "$work/$key.pem" "$work/$key.key"
done

profile plain "$(config_head http)
    type: command
    config:
      command: [sh, -c, 'echo {\"k\": \"\$(date +%s%N)\"}']
      records: ndjson
      destination: {type: raw, database: d, table: t, key: '{k}'}"

python3 - extractors/link/symbol-order.txt "$work/tls-ec.out" "$work/tls-rsa.out" "$work/plain.out" <<'PY'
import sys
seen, order = set(), []
for path in sys.argv[2:]:
    ob = None
    for line in open(path):
        if line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("fn=") and ob and ob.endswith("/extractor-runtime"):
            name = line[3:].strip()
            if name not in seen:
                seen.add(name)
                order.append(name)
open(sys.argv[1], "w").write("\n".join(order) + "\n")
print(f"{len(order)} functions -> {sys.argv[1]}")
PY
