#!/usr/bin/env bash
# Runs a command with the services the test suite needs:
#   - PostgreSQL: a throwaway server on a free loopback port (Debian's postgresql package,
#     installed here when missing and we are root), unless PAYGATE_TEST_POSTGRES_URL is set;
#   - Kafka: the jars are fetched up front; the suite starts its own broker unless
#     KAFKA_BOOTSTRAP_SERVERS is set;
#   - stripe-mock: installed up front with `go install` (the suite starts it on free
#     ports), unless STRIPE_MOCK_BIN points at one;
#   - helm: installed up front with `go install` (the Helm chart's tests run `helm lint`
#     and `helm template`), unless HELM_BIN points at one or helm is on PATH;
#   - the AsyncAPI CLI: installed up front with npm (a test validates the AsyncAPI
#     document with it), unless ASYNCAPI_BIN points at one or asyncapi is on PATH.
# Usage: scripts/with-test-services.sh <command> [args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"

pg_bin_dir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_postgres_installed() {
  pg_bin_dir >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL (Debian package postgresql) ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "PostgreSQL is not installed: install Debian's postgresql package or set PAYGATE_TEST_POSTGRES_URL" >&2
    return 1
  fi
}

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pg_dir=""
pg_user=""
as_pg_user() {
  if [ -n "$pg_user" ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi
}

start_postgres() {
  ensure_postgres_installed
  local bin port
  bin="$(pg_bin_dir)"
  pg_dir="$(mktemp -d /tmp/paygate-pg.XXXXXX)"
  # PostgreSQL refuses to run as root; the Debian package creates the postgres user.
  if [ "$(id -u)" = 0 ]; then pg_user=postgres; chown "$pg_user" "$pg_dir"; fi
  as_pg_user "$bin/initdb" -D "$pg_dir/data" -U paygate --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; return 1; }
  for attempt in 1 2 3; do
    port="$(free_port)"
    if as_pg_user "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null; then
      export PAYGATE_TEST_POSTGRES_URL="postgresql+asyncpg://paygate@127.0.0.1:$port/postgres"
      echo "PostgreSQL for the tests: $PAYGATE_TEST_POSTGRES_URL" >&2
      return 0
    fi
    echo "PostgreSQL did not start on port $port (attempt $attempt)" >&2
    tail -n 20 "$pg_dir/server.log" >&2 || true
  done
  return 1
}

stop_postgres() {
  [ -n "$pg_dir" ] || return 0
  as_pg_user "$(pg_bin_dir)/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT

if [ -z "${PAYGATE_TEST_POSTGRES_URL:-}" ]; then
  start_postgres
fi
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  echo "fetching Apache Kafka jars (cached after the first run) ..." >&2
  "$python" -m devtools.kafka --fetch-only >&2
fi
stripe_mock_cache="$HOME/.cache/paygate/go/bin"
if [ -z "${STRIPE_MOCK_BIN:-}" ] && [ ! -x "$stripe_mock_cache/stripe-mock" ] \
    && ! command -v stripe-mock >/dev/null; then
  if command -v go >/dev/null; then
    echo "installing stripe-mock with go install (cached after the first run) ..." >&2
    GOBIN="$stripe_mock_cache" go install github.com/stripe/stripe-mock@v0.203.0 >&2
  else
    echo "Go is not installed: the Stripe adapter's tests need stripe-mock (go install)" >&2
  fi
fi

if [ -z "${VEGETA_BIN:-}" ] && [ ! -x "$stripe_mock_cache/vegeta" ] && ! command -v vegeta >/dev/null; then
  if command -v go >/dev/null; then
    echo "installing vegeta with go install (cached after the first run) ..." >&2
    GOBIN="$stripe_mock_cache" go install github.com/tsenart/vegeta/v12@v12.13.0 >&2
  else
    echo "Go is not installed: the REST bench's smoke test needs vegeta (go install)" >&2
  fi
fi

if [ -z "${HELM_BIN:-}" ] && [ ! -x "$stripe_mock_cache/helm" ] && ! command -v helm >/dev/null; then
  if command -v go >/dev/null; then
    echo "installing helm with go install (cached after the first run; a few minutes) ..." >&2
    GOBIN="$stripe_mock_cache" go install helm.sh/helm/v3/cmd/helm@v3.16.2 >&2
  else
    echo "Go is not installed: the Helm chart's tests need helm (go install)" >&2
  fi
fi

# 4.1.1: the newest @asyncapi/cli that accepts a Node older than 24 (5.x and 6.x require 24).
# --ignore-scripts: validating needs no install script, and some would fetch a browser.
asyncapi_cache="$HOME/.cache/paygate/npm"
if [ -z "${ASYNCAPI_BIN:-}" ] && [ ! -x "$asyncapi_cache/node_modules/.bin/asyncapi" ] \
    && ! command -v asyncapi >/dev/null; then
  if command -v npm >/dev/null; then
    echo "installing the AsyncAPI CLI with npm (cached after the first run; a few minutes) ..." >&2
    npm install --prefix "$asyncapi_cache" --no-audit --no-fund --ignore-scripts \
      --loglevel=error @asyncapi/cli@4.1.1 >&2
  else
    echo "npm is not installed: the AsyncAPI document's test needs the AsyncAPI CLI" >&2
  fi
fi

"$@"
