#!/usr/bin/env bash
# Creates what docker-compose.yml needs and git must never see, readable by their owner only:
#   secrets/master.key  32 random bytes, base64, mode 0600, owned by the image's user (uid 1000)
#                       because compose bind-mounts the file as it is on the host;
#   .env                POSTGRES_PASSWORD, PRIMARY_DB_PASSWORD, ARCHIVE_DB_PASSWORD and
#                       FLOWER_BASIC_AUTH and LIFECYCLE_METRICS_PASSWORD, mode 0600.
# Nothing that exists is overwritten: a second run adds only what is missing. The passwords are
# hex because compose pastes the database ones into connection URLs.
# Usage: bash scripts/make-secrets.sh [DIR]   (DIR defaults to the repository's root)
set -euo pipefail
umask 077
DIR="${1:-$(dirname "$0")/..}"
cd "$DIR"
IMAGE_UID="${LIFECYCLE_IMAGE_UID:-1000}"

random_hex() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

mkdir -p secrets
chmod 0700 secrets
if [ ! -e secrets/master.key ]; then
  head -c 32 /dev/urandom | base64 > secrets/.master.key.part
  mv secrets/.master.key.part secrets/master.key
  echo "make-secrets: created secrets/master.key" >&2
fi
chmod 0600 secrets/master.key

touch .env
chmod 0600 .env
for var in POSTGRES_PASSWORD PRIMARY_DB_PASSWORD ARCHIVE_DB_PASSWORD FLOWER_BASIC_AUTH \
  LIFECYCLE_METRICS_PASSWORD; do
  if ! grep -q "^${var}=" .env; then
    value="$(random_hex)"
    [ "$var" = FLOWER_BASIC_AUTH ] && value="ops:$value"
    printf '%s=%s\n' "$var" "$value" >> .env
    echo "make-secrets: added $var to .env" >&2
  fi
done

if [ "$(stat -c %u secrets/master.key)" != "$IMAGE_UID" ]; then
  if [ "$(id -u)" = 0 ]; then
    chown "$IMAGE_UID:$IMAGE_UID" secrets/master.key
  else
    echo "make-secrets: the containers run as uid $IMAGE_UID and cannot read secrets/master.key;" \
      "run: sudo chown $IMAGE_UID:$IMAGE_UID $PWD/secrets/master.key" >&2
    exit 1
  fi
fi
if ! grep -q '^LIFECYCLE_SMTP_URL=' .env; then
  echo "make-secrets: now add LIFECYCLE_SMTP_URL=smtp+starttls://user:pass@relay:587 (your" \
    "relay) to .env; compose refuses to start without it" >&2
fi
