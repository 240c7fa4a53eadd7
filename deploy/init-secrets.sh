#!/usr/bin/env sh
# Creates the docker-compose secrets that do not exist yet (never overwrites one).
# OPENAI_API_KEY from the environment becomes the upstream key; without it a placeholder is
# written, which only the simulated upstream (sim.env) accepts.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"

put() {
    if [ ! -s "$dir/$1" ]; then
        printf '%s' "$2" > "$dir/$1"
        # Bind-mounted as is: the container's non-root user (uid 10001) must be able to read it.
        chmod 0644 "$dir/$1"
        echo "created secrets/$1"
    fi
}

random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

put openai_api_key "${OPENAI_API_KEY:-sk-simulated-upstream-only}"
put admin_token "$(random)"
put key_pepper "$(random)"
put grafana_admin_password "$(random)"
