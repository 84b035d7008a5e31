# modelplex with metrics and the request log off: the bare request path (see modelplex.sh).
source "$(dirname "${BASH_SOURCE[0]}")/modelplex.sh"
MODELPLEX_CONFIG="$(dirname "${BASH_SOURCE[0]}")/modelplex/config-bare.yaml"
START_CMD="mkdir -p /tmp/modelplex-bench && env MOCK_BASE=$MOCK_BASE MOCK_STREAM_BASE=$MOCK_STREAM_BASE $MODELPLEX_VENV/bin/modelplex serve \
 --config $MODELPLEX_CONFIG --host 127.0.0.1 --port $GW_PORT --workers 1"
NOTES="$NOTES Variant: metrics and request log off."
