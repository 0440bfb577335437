#!/usr/bin/env bash
# make test's last step: schemathesis (from target/schemathesis-venv, see
# requirements.txt) over every operation of proxy/openapi.json, against a
# proxy that with_proxy.rs serves with the test IdP and the Redis at
# CIBA_TEST_REDIS_URL. Settings and checks: schemathesis.toml. Exits
# non-zero on any failure. Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
fixtures=target/schemathesis
rm -rf "$fixtures"
mkdir -p "$fixtures"
# Hypothesis's own files (unicode tables, constants) go there too, not
# into the tree.
export HYPOTHESIS_STORAGE_DIRECTORY="$fixtures/hypothesis"

# The document is read from the tree (the suite checks that the proxy
# serves exactly this file): loaded from the proxy's own URL, schemathesis
# would leave out GET /openapi.json.
exec cargo run --quiet -p ciba-proxy-e2e --bin with-proxy -- \
  --fixtures "$fixtures" \
  "$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml --no-color \
  run proxy/openapi.json --url '{url}' \
  "$@"
