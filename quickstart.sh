#!/usr/bin/env bash
# Vigo quickstart: a server on the embedded SQLite store, this machine enrolled as
# an agent, the example configuration published and converged once.
# Everything lives under .quickstart/ (the examples write only /tmp/vigo-example);
# run it again to start over.
set -euo pipefail
cd "$(dirname "$0")"

Q="$PWD/.quickstart"
BIN="$PWD/target/debug"
GRPC_PORT="${VIGO_GRPC_PORT:-1530}"
API_PORT="${VIGO_API_PORT:-8443}"

echo "==> building vigosrv, vigo and vigocli"
cargo build -q --bin vigosrv --bin vigo --bin vigocli

if [ -f "$Q/server.pid" ] && kill -0 "$(cat "$Q/server.pid")" 2>/dev/null; then
  echo "==> stopping the previous quickstart server"
  kill "$(cat "$Q/server.pid")" && sleep 1
fi
rm -rf "$Q"
mkdir -p "$Q/config"
cp -r examples/modules examples/templates "$Q/config/"
cat > "$Q/config/assignments.yaml" <<YAML
assignments:
  - hosts: "*"
    modules: [example]
YAML
cat > "$Q/config/server.yaml" <<YAML
interval_secs: 15
listen:
  grpc: 127.0.0.1:$GRPC_PORT
  api: 127.0.0.1:$API_PORT
YAML

echo "==> initialising the server state in $Q/server"
FP=$("$BIN/vigosrv" init --state-dir "$Q/server" | sed -n 's/^CA fingerprint (SHA-256): //p')

echo "==> starting vigosrv (log: $Q/server.log)"
"$BIN/vigosrv" --state-dir "$Q/server" --config-dir "$Q/config" >"$Q/server.log" 2>&1 &
echo $! > "$Q/server.pid"
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null && break
  sleep 0.2
done

export VIGO_SERVER="https://127.0.0.1:$API_PORT"
export VIGO_CA="$Q/server/ca/ca.pem"
export VIGO_TOKEN_FILE="$Q/server/admin.token"
CLI=("$BIN/vigocli" --server "$VIGO_SERVER" --ca "$VIGO_CA" --token-file "$VIGO_TOKEN_FILE")

# The server's certificate carries this machine's host name, and no envoy may enroll
# under a name of the server's: the agent here gets a name of its own.
NAME="$(hostname | tr 'A-Z' 'a-z')-agent"
TOKEN=$("${CLI[@]}" token create --hosts "$NAME" --ttl 1h --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')

echo "==> enrolling this machine as $NAME"
export VIGO_ETC_DIR="$Q/agent/etc" VIGO_STATE_DIR="$Q/agent/state"
"$BIN/vigo" enroll --server 127.0.0.1 --port "$GRPC_PORT" --token "$TOKEN" --ca-fingerprint "$FP" --name "$NAME"

echo "==> publishing the example configuration"
"${CLI[@]}" publish -m "quickstart"

echo "==> checking in and converging"
"$BIN/vigo" run --once
echo "==> second check-in delivers the report"
"$BIN/vigo" run --once >/dev/null

echo
echo "Done. The server is still running (pid $(cat "$Q/server.pid")). Next:"
echo "  target/debug/vigocli --server $VIGO_SERVER --ca $VIGO_CA --token-file $VIGO_TOKEN_FILE envoys show $NAME"
echo "  target/debug/vigocli --server $VIGO_SERVER --ca $VIGO_CA --token-file $VIGO_TOKEN_FILE envoys reports $NAME"
echo "  target/debug/vigocli --server $VIGO_SERVER --ca $VIGO_CA --token-file $VIGO_TOKEN_FILE status"
echo "  edit /tmp/vigo-example/service.conf, then: VIGO_ETC_DIR=$VIGO_ETC_DIR VIGO_STATE_DIR=$VIGO_STATE_DIR target/debug/vigo run --once"
echo "  stop the server: kill \$(cat $Q/server.pid)"
