# The reference floor: a bare 40-line proxy (uvicorn + uvloop + httptools, aiohttp, orjson), no key
# check, no parsing beyond JSON. Run beside modelplex to see what the design costs on this machine.
BARE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/bare40" && pwd)
START_CMD="cd $BARE_DIR && env MOCK_BASE=$MOCK_BASE MOCK_STREAM_BASE=$MOCK_STREAM_BASE $BENCH_PREFIX/venv-modelplex/bin/python -m uvicorn bare:app --host 127.0.0.1 --port $GW_PORT --loop uvloop --http httptools --no-access-log --log-level warning"
BASE_URL="http://127.0.0.1:$GW_PORT/v1"
MODEL="mock-gpt"
NOTES="reference only: a 40-line proxy with no gateway features"
install() {
  # Shares modelplex's venv (same uvicorn, uvloop, httptools, aiohttp); creates it if this runs first.
  [ -x "$BENCH_PREFIX/venv-modelplex/bin/python" ] || python3 -m venv "$BENCH_PREFIX/venv-modelplex" || return 1
  "$BENCH_PREFIX/venv-modelplex/bin/pip" install -q orjson "uvicorn[standard]" aiohttp >/dev/null
}
version() { echo "bare proxy (uvicorn $("$BENCH_PREFIX/venv-modelplex/bin/python" -c 'import uvicorn; print(uvicorn.__version__)'))"; }
