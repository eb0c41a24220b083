#!/usr/bin/env bash
# Writes what docker-compose.yml needs and no one should type by hand:
#   DIR/.env                                  POSTGRES_PASSWORD and the deployment's settings
#   DIR/secrets/auth_key_encryption_secret    the key-encryption secret (Docker secret, mode 600)
# Usage: scripts/generate_secrets.sh [--force] [DIR]   (DIR defaults to the repository root)
# It refuses to overwrite either file unless --force: a new key-encryption secret makes the
# stored signing keys unreadable, a new POSTGRES_PASSWORD no longer matches the database.
# The settings of .env (ISSUER, PASSWORD_RESET_URL, ...) are taken from the environment when
# set, and left empty otherwise: compose refuses to start until they are filled in.
set -euo pipefail

usage() {
    echo "usage: $0 [--force] [DIR]" >&2
    exit 2
}

force=0
target=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) usage ;;
        -*) echo "unknown option: $arg" >&2; usage ;;
        *)
            [ -z "$target" ] || usage
            target="$arg"
            ;;
    esac
done
[ -n "$target" ] || target="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$target"

env_file="$target/.env"
secret_file="$target/secrets/auth_key_encryption_secret"
# The image runs as this uid; a file secret is bind-mounted as it is on the host (compose
# ignores uid/gid/mode outside Swarm), so the container user must own it.
secret_owner="${AUTH_SECRET_OWNER:-10001}"

if [ "$force" -eq 0 ]; then
    refused=0
    for existing in "$env_file" "$secret_file"; do
        if [ -e "$existing" ]; then
            echo "refusing to overwrite $existing (use --force to replace it)" >&2
            refused=1
        fi
    done
    [ "$refused" -eq 0 ] || exit 1
fi

random_secret() {
    # $1: bytes of randomness; url-safe base64, about 1.33 characters a byte.
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))' "$1"
    else
        openssl rand -base64 "$1" | tr -d '\n=' | tr '+/' '-_'
        echo
    fi
}

umask 077
mkdir -p "$target/secrets"
chmod 700 "$target/secrets"

secret="$(random_secret 64)"  # 86 characters
tmp_secret="$(mktemp "$target/secrets/.auth_key_encryption_secret.XXXXXX")"
printf '%s' "$secret" >"$tmp_secret"
chmod 600 "$tmp_secret"
mv -f "$tmp_secret" "$secret_file"

tmp_env="$(mktemp "$target/.env.XXXXXX")"
cat >"$tmp_env" <<ENV
# Written by scripts/generate_secrets.sh for docker-compose.yml (docs/deploying.md).
# Keep it private. The names have no AUTH_ prefix: compose maps each to its AUTH_ setting.
POSTGRES_PASSWORD=$(random_secret 48)
# Bearer token for GET /metrics from outside the compose network.
METRICS_TOKEN=$(random_secret 48)

# Fill in (https URLs: production refuses http):
ISSUER=${ISSUER:-}
PASSWORD_RESET_URL=${PASSWORD_RESET_URL:-}
EMAIL_VERIFICATION_URL=${EMAIL_VERIFICATION_URL:-}
INVITATION_URL=${INVITATION_URL:-}
# Browser origins allowed by CORS, comma-separated (https://app.example.com); empty: none.
CORS_ORIGINS=${CORS_ORIGINS:-}
AUDIENCE=${AUDIENCE:-auth-service}

# Mail goes out over SMTP with STARTTLS (production refuses anything else).
SMTP_HOST=${SMTP_HOST:-}
SMTP_PORT=${SMTP_PORT:-587}
SMTP_USERNAME=${SMTP_USERNAME:-}
SMTP_PASSWORD=${SMTP_PASSWORD:-}
MAIL_FROM=${MAIL_FROM:-}

# uvicorn worker processes in each replica.
WORKERS=${WORKERS:-1}
ENV
chmod 600 "$tmp_env"
mv -f "$tmp_env" "$env_file"

if [ "$(id -u)" -eq 0 ]; then
    chown "$secret_owner:$secret_owner" "$secret_file"
else
    echo "note: the container user (uid $secret_owner) must be able to read $secret_file:" >&2
    echo "      sudo chown $secret_owner:$secret_owner $secret_file" >&2
fi
echo "wrote $env_file and $secret_file"
