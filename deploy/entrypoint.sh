#!/bin/sh
# The image's entrypoint. No arguments: serve on 0.0.0.0:8000 with ${AUTH_WORKERS:-1} workers.
# Otherwise the arguments are a command line of auth-service, with or without the name:
# `auth-service migrate` and `migrate` both run the migrations.
set -eu
if [ "$#" -eq 0 ]; then
    exec auth-service serve --host 0.0.0.0 --port 8000 --workers "${AUTH_WORKERS:-1}"  # or auto
fi
if [ "$1" = "auth-service" ]; then
    shift
fi
exec auth-service "$@"
