# ciba-proxy: `make help` lists the targets. CI runs `make test` (see .ci/run).
.DEFAULT_GOAL := help
SHELL := /bin/bash

REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
IDP_STAMP := tests/idp/node_modules/.installed
SCHEMATHESIS_VENV := target/schemathesis-venv
SCHEMATHESIS_STAMP := $(SCHEMATHESIS_VENV)/.installed

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(IDP_STAMP): tests/idp/package.json tests/idp/package-lock.json
	cd tests/idp && npm ci --no-audit --no-fund
	touch $@

.PHONY: idp-deps
idp-deps: $(IDP_STAMP) ## Install the test IdP's npm packages (from its lockfile)

$(SCHEMATHESIS_STAMP): tests/schemathesis/requirements.txt
	rm -rf $(SCHEMATHESIS_VENV)
	python3 -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r tests/schemathesis/requirements.txt
	$(SCHEMATHESIS_VENV)/bin/pip check --disable-pip-version-check
	touch $@

.PHONY: schemathesis-deps
schemathesis-deps: $(SCHEMATHESIS_STAMP) ## Install schemathesis (pinned in tests/schemathesis/requirements.txt) into target/schemathesis-venv

.PHONY: schemathesis
schemathesis: schemathesis-deps idp-deps redis ## Fuzz every endpoint of both ports against proxy/openapi.json and proxy/openapi-operator.json (make test's last step)
	cargo build --workspace --bins
	CIBA_TEST_REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT) SCHEMATHESIS_VENV=$(SCHEMATHESIS_VENV) bash tests/schemathesis/run.sh

.PHONY: redis
redis: ## Start redis-server on $(REDIS_HOST):$(REDIS_PORT) unless one answers there
	@if (exec 3<>/dev/tcp/$(REDIS_HOST)/$(REDIS_PORT)) 2>/dev/null; then \
		echo "redis: already listening on $(REDIS_HOST):$(REDIS_PORT)"; \
	else \
		echo "redis: starting redis-server on $(REDIS_HOST):$(REDIS_PORT)"; \
		redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save "" --appendonly no; \
		for i in $$(seq 50); do (exec 3<>/dev/tcp/$(REDIS_HOST)/$(REDIS_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	fi

.PHONY: build
build: ## Build everything
	cargo build --workspace --all-targets

.PHONY: browser-deps
browser-deps: ## Check that Chromium and ChromeDriver (the browser tests) are installed
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "make test needs Chromium and ChromeDriver for the browser tests: apt-get install chromium chromium-driver" >&2; \
		exit 1; }

.PHONY: smtp-deps
smtp-deps: ## Check that Debian's aiosmtpd (the e-mail channel's tests' SMTP server) is installed
	@/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || { \
		echo "make test needs a real SMTP server for the e-mail channel's tests: apt-get install python3-aiosmtpd" >&2; \
		exit 1; }

.PHONY: test
test: browser-deps smtp-deps idp-deps schemathesis-deps redis ## Unit and end-to-end tests (real Redis, real oidc-provider, headless Chromium), then schemathesis
	cargo build --workspace --bins
	CIBA_TEST_REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT) cargo test --workspace
	CIBA_TEST_REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT) SCHEMATHESIS_VENV=$(SCHEMATHESIS_VENV) bash tests/schemathesis/run.sh

.PHONY: demo
demo: idp-deps ## One narrated CIBA login: test IdP, proxy (in memory), client and phone
	cargo run --quiet -p ciba-proxy-e2e --bin demo

.PHONY: demo-ciba
demo-ciba: idp-deps ## One narrated login through the IdP's own CIBA (upstream.kind = "ciba")
	cargo run --quiet -p ciba-proxy-e2e --bin demo-ciba

.PHONY: bench
bench: idp-deps redis ## The poll path against a bare handler (ratio, latency, Redis bytes); store costs, WAIT, 3 instances on a cluster; IdP requests per login; long polling off vs on (release build; BENCH_ARGS=poll|store|idp for one part)
	cargo build --release --quiet -p ciba-proxy --bin ciba-proxy -p ciba-proxy-e2e --bin bench-floor
	CIBA_TEST_REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT) cargo run --release --quiet -p ciba-proxy-e2e --bin bench $(BENCH_ARGS)

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with warnings denied
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: fuzz
fuzz: ## Run each cargo-fuzz target for FUZZ_SECONDS (default 30) on nightly
	bash fuzz/run.sh

.PHONY: run
run: ## Run the proxy with deploy/ciba-proxy.example.toml
	cargo run -p ciba-proxy -- --config deploy/ciba-proxy.example.toml
