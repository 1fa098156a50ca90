#!/bin/sh
# Like the official redis image: without a config file, protected mode is off (the data network is
# internal; Redis holds nothing that must survive).
if [ "${1:-}" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi
exec "$@"
