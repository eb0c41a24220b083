#!/usr/bin/env bash
# Strong secrets for docker-compose.yml: writes DIR/.env (the database password and the
# settings an operator must fill in) and DIR/secrets/auth_key_encryption_secret (the Docker
# secret, mode 0600). DIR defaults to the repository root. Refuses to overwrite either file
# unless --force is given.
set -euo pipefail

force=0
dir="$(cd "$(dirname "$0")/.." && pwd)"
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) echo "usage: $0 [--force] [DIR]"; exit 0 ;;
        *) dir="$arg" ;;
    esac
done

env_file="$dir/.env"
secret_file="$dir/secrets/auth_key_encryption_secret"
for file in "$env_file" "$secret_file"; do
    if [[ -e "$file" && "$force" -ne 1 ]]; then
        echo "generate_secrets: $file exists; pass --force to replace it" >&2
        exit 1
    fi
done

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(64))'; }

umask 077
mkdir -p "$dir/secrets"
random > "$secret_file"
chmod 600 "$secret_file"
cat > "$env_file" <<ENV
# Written by scripts/generate_secrets.sh. Fill in the https URLs and SMTP before
# \`docker compose up\`; the service refuses to start in production otherwise.
POSTGRES_PASSWORD=$(random)
AUTH_ISSUER=https://auth.example.com
AUTH_PASSWORD_RESET_URL=https://app.example.com/reset-password
AUTH_EMAIL_VERIFICATION_URL=https://app.example.com/verify-email
AUTH_INVITATION_URL=https://app.example.com/accept-invitation
AUTH_MAIL_FROM=auth-service <no-reply@example.com>
AUTH_SMTP_HOST=smtp.example.com
AUTH_SMTP_PORT=587
AUTH_METRICS_TOKEN=$(random)
ENV
chmod 600 "$env_file"
echo "generate_secrets: wrote $env_file and $secret_file"
