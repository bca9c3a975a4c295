# emsops: `make test` and `make demo` install what they need on a fresh Debian 12 machine (root).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
RELEASES := build/releases
# Lab (systemd containers, package mirror), restic, and PostgreSQL + psycopg2 for the tests that
# run the reference EMS and the API store against a real server.
APT_PACKAGES := systemd-container debootstrap apt-cacher-ng openssh-client iproute2 restic \
	postgresql python3-psycopg2 python3-venv

.PHONY: all deps venv releases lint unit lab test demo clean

all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

releases: $(RELEASES)/SHA256SUMS

$(RELEASES)/SHA256SUMS: lab/ems/build_releases.py lab/ems/releases.json $(shell find lab/ems/src -type f -not -name '*.pyc')
	python3 lab/ems/build_releases.py --out $(RELEASES)

lint: venv
	$(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint -q
	for p in playbooks/*.yml; do \
		$(BIN)/ansible-playbook --syntax-check -i inventories/example/hosts.yml $$p >/dev/null || exit 1; \
	done

unit: deps venv releases
	$(BIN)/pytest tests/unit

lab: deps venv releases
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest --durations=40 tests/lab

test: deps venv releases lint unit lab

demo: deps venv releases
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m lab.demo

clean:
	rm -rf build var .pytest_cache .ruff_cache
