# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
# Each installs what is missing (Debian packages, the virtual environment from the exact lock, the
# package and its native extension) and skips what is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
APT_PKGS := espeak-ng flite sox g++-aarch64-linux-gnu qemu-user

.PHONY: test demo install system-deps lint lock clean cli cli-aarch64 cli-asan

test: install
	$(PY) tests/check_env.py
	$(PY) -m pytest -q

demo: install
	$(PY) -m examples.kws.demo $(DEMO_ARGS)

# The standalone runtime: C++ library + C API + the fbck_run CLI, no Python (backends/README.md).
# `make cli` builds it for this machine, `make cli-aarch64` cross-builds it for 64-bit ARM Linux
# (static, runs on a device or under qemu-aarch64), `make cli-asan` with AddressSanitizer.
CMAKE := $(if $(wildcard $(VENV)/bin/cmake),$(VENV)/bin/cmake,cmake)
CLI_FLAGS := -DCMAKE_BUILD_TYPE=Release

cli:
	$(CMAKE) -S . -B build/cli-native $(CLI_FLAGS) >/dev/null
	$(CMAKE) --build build/cli-native --target fbck_run -j 2

cli-aarch64:
	$(CMAKE) -S . -B build/cli-aarch64 $(CLI_FLAGS) -DFBCK_STATIC_CLI=ON \
	  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake >/dev/null
	$(CMAKE) --build build/cli-aarch64 --target fbck_run -j 2

cli-asan:
	$(CMAKE) -S . -B build/cli-asan $(CLI_FLAGS) -DFBCK_SANITIZE=address >/dev/null
	$(CMAKE) --build build/cli-asan --target fbck_run -j 2

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

# The virtual environment holds exactly what requirements.lock pins (hashes checked, no other
# package pulled in), then binarize itself in editable mode (compiles the nanobind extension).
# scikit-build-core's editable .pth also puts the repo root on sys.path, which would make the
# repo's folders importable as top-level `passes` and `backends` from anywhere; its redirecting
# finder alone serves every binarize.* module, so only its import line is kept.
$(STAMP): $(LOCK) pyproject.toml CMakeLists.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	sed -i '/^import /!d' $(VENV)/lib/python3*/site-packages/_editable_skbc_binarize.pth
	touch $@

# Re-resolve requirements.in + pyproject.toml's [dev] extra into the exact lock (Python 3.11,
# x86-64 Linux). See README "Upgrading a dependency".
lock:
	test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q "$$(grep -o '^uv==[^ ]*' $(LOCK))"; }
	$(VENV)/bin/uv pip compile pyproject.toml requirements.in --extra dev \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --generate-hashes --no-header --index-url https://pypi.org/simple -o $(LOCK)

clean:
	rm -rf build
