#!/usr/bin/env bash
# Opens JupyterLab on the tutorials for `make lab`: the server's log goes to a file so the last
# line printed is the URL to open (with its token), and Ctrl-C stops the server.
# usage: scripts/lab.sh PYTHON NOTEBOOK_DIR LOG_FILE
set -euo pipefail
py=$1 dir=$2 log=$3
bin=$(dirname "$py")

model=$("$py" -m cellwire.services.llm.default --probe) || model=scripted/echo
echo "cellwire: llm nodes without a provider of their own run on $model"

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$("$py" -c 'import secrets; print(secrets.token_hex(24))')
mkdir -p "$(dirname "$log")"
CELLWIRE_DEFAULT_MODEL="$model" "$bin/jupyter" lab --no-browser --notebook-dir="$dir" \
  --ServerApp.allow_root=True --ip=127.0.0.1 --port="$port" --ServerApp.port_retries=0 \
  --IdentityProvider.token="$token" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT INT TERM

echo "starting JupyterLab (its log: $log)"
for _ in $(seq 240); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "JupyterLab did not start; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
       "http://127.0.0.1:$port/api/status?token=$token" 2>/dev/null; then
    echo "stop it with Ctrl-C"
    echo "open http://127.0.0.1:$port/lab/tree/00-index.ipynb?token=$token"
    wait "$pid"
    exit 0
  fi
  sleep 0.5
done
echo "JupyterLab did not answer within two minutes; its log: $log" >&2
exit 1
