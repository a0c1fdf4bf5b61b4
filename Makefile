# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
# Each installs what is missing (Debian packages, the virtual environment, the package and its
# native extension) and skips what is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PKGS := espeak-ng flite sox g++-aarch64-linux-gnu qemu-user
TORCH_PINS := "torch==2.11.*" "torchaudio==2.11.*" "torchvision==0.26.*"

.PHONY: test demo install system-deps lint clean

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m examples.kws.demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .

install: system-deps $(STAMP)

# Debian packages: TTS engines for the synthetic data, the aarch64 cross compiler and qemu-user
# for the NEON kernels. Installed only when one is missing.
system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q scikit-build-core nanobind ninja cmake
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

clean:
	rm -rf build
