# Gateway under test: modelplex (this repository), one worker process.
# Sourced by the shared harness (../shared/bench/run.sh); see its README for the contract.
# Run from the repository root:
#   ../shared/bench/run.sh --only litellm,portkey,benchmarks/harness/modelplex.sh
# Available here: BENCH_DIR BENCH_PREFIX GW_PORT MOCK_BASE MOCK_STREAM_BASE

MODELPLEX_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODELPLEX_VENV="$BENCH_PREFIX/venv-modelplex"
MODELPLEX_CONFIG="$(dirname "${BASH_SOURCE[0]}")/modelplex/config.yaml"

START_CMD="mkdir -p /tmp/modelplex-bench && env MOCK_BASE=$MOCK_BASE MOCK_STREAM_BASE=$MOCK_STREAM_BASE $MODELPLEX_VENV/bin/modelplex serve \
 --config $MODELPLEX_CONFIG --host 127.0.0.1 --port $GW_PORT --workers 1"
BASE_URL="http://127.0.0.1:$GW_PORT/v1"
MODEL="mock-gpt"
STREAM_MODEL="mock-gpt-stream"
HEADERS=("Authorization: Bearer sk-bench-0123456789abcdef0123456789abcdef")
START_TIMEOUT=60
NOTES="modelplex $(cd "$MODELPLEX_REPO" && git describe --always --dirty 2>/dev/null), one worker (uvicorn + uvloop + httptools, \
aiohttp upstream client), gateway key checked on every request, config reload off, log level warning."

install() {
  [ -x "$MODELPLEX_VENV/bin/python" ] || python3 -m venv "$MODELPLEX_VENV" || return 1
  # Reinstall every time: the benchmark measures the working tree as it is now.
  "$MODELPLEX_VENV/bin/pip" install -q --force-reinstall --no-deps "$MODELPLEX_REPO" >/dev/null \
    && "$MODELPLEX_VENV/bin/pip" install -q "$MODELPLEX_REPO" >/dev/null
}

version() {
  echo "modelplex $("$MODELPLEX_VENV/bin/python" -c 'import modelplex; print(modelplex.__version__)') \
($(cd "$MODELPLEX_REPO" && git rev-parse --short HEAD)) / uvicorn $("$MODELPLEX_VENV/bin/python" -c 'import uvicorn; print(uvicorn.__version__)') \
/ aiohttp $("$MODELPLEX_VENV/bin/python" -c 'import aiohttp; print(aiohttp.__version__)')"
}
