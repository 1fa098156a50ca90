#!/bin/sh
# MinIO's `server DIR [--console-address ADDR]`, served by moto on :9000 (objects in memory).
if [ "${1:-}" = server ]; then
  exec /opt/moto/bin/moto_server -H 0.0.0.0 -p 9000
fi
exec "$@"
