#!/bin/sh
# Entrypoint of the coordinator image (busybox sh): on the first start of
# `serve`, create the cluster CA and the database in the data directory, then
# run the coordinator as PID 1. Any other command runs as given, e.g.
# `docker exec ... autogit-coordinator token create`.
set -eu

data_dir=${AUTOGIT_DATA_DIR:-/var/lib/autogit}
prev=
for arg in "$@"; do
    case $arg in
    --data-dir=*) data_dir=${arg#--data-dir=} ;;
    esac
    if [ "$prev" = --data-dir ]; then
        data_dir=$arg
    fi
    prev=$arg
done

if [ "${1:-}" = serve ] && [ ! -f "$data_dir/ca.pem" ]; then
    echo "autogit-entrypoint: no cluster CA in $data_dir; running init" >&2
    autogit-coordinator init --data-dir "$data_dir"
fi
exec autogit-coordinator "$@"
