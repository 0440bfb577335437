#!/usr/bin/env bash
# make test's last step: schemathesis (from target/schemathesis-venv, see
# requirements.txt) over every operation of both documents, against a
# proxy that with_proxy.rs serves with the test IdP and the Redis at
# CIBA_TEST_REDIS_URL: proxy/openapi.json on the public port, then
# proxy/openapi-operator.json on the operator port with the admin token.
# Settings and checks: schemathesis.toml. Exits non-zero on any failure
# (both runs always run). Extra arguments go to each `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
fixtures=target/schemathesis

# Second half, inside with-proxy (which sets CIBA_PROXY_OPERATOR_URL).
# The documents are read from the tree (the suite checks that each port
# serves exactly its file): loaded from the proxy's own URL, schemathesis
# would leave out GET /openapi.json. The operator run comes second: it
# cancels the live request the public run polls.
if [[ -n "${CIBA_PROXY_OPERATOR_URL:-}" ]]; then
  status=0
  for run in "proxy/openapi.json $CIBA_PROXY_URL" \
             "proxy/openapi-operator.json $CIBA_PROXY_OPERATOR_URL"; do
    read -r document url <<<"$run"
    echo "schemathesis: $document at $url" >&2
    "$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml --no-color \
      run "$document" --url "$url" "$@" || status=1
  done
  exit "$status"
fi

rm -rf "$fixtures"
mkdir -p "$fixtures"
# Hypothesis's own files (unicode tables, constants) go there too, not
# into the tree.
export HYPOTHESIS_STORAGE_DIRECTORY="$fixtures/hypothesis"

exec cargo run --quiet -p ciba-proxy-e2e --bin with-proxy -- \
  --fixtures "$fixtures" \
  bash "$0" "$@"
