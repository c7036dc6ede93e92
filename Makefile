# Two commands set a fresh machine up (see README "Quick start"):
#   make train   installs the template's needs and trains the default config
#   make test    installs what the tests need (OpenSSH's server too) and runs ruff + pytest
# Outside a virtual environment both create and use .venv, with --system-site-packages so Colab's CUDA
# torch stays visible; nothing is installed into a system Python (Debian 12 and Ubuntu 24.04 refuse that:
# externally-managed-environment). Inside one (venv, virtualenv, conda) they use it.
# torch is pinned only where none is importable: on Colab the preinstalled CUDA build is kept;
# on a CPU-only machine the pin takes the CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN ?= torch==2.13.0
CONFIG ?= project/config.json
PYTEST_ARGS ?=

IN_ENV := $(shell $(PYTHON) -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or bool(os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX"))))' 2>/dev/null)
ifeq ($(IN_ENV),1)
PY := $(PYTHON)
TRAIN_READY := install-train
TEST_READY := install-test
else
PY := $(VENV)/bin/python
TRAIN_READY := $(VENV)/.train-ready
TEST_READY := $(VENV)/.test-ready
endif
# pip's console scripts (remotectl, ruff) first on PATH, as an activated environment has them
WITH_SCRIPTS = PATH="$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$$PATH"

.PHONY: train test install-train install-test lint sshd venv-support

train: $(TRAIN_READY)
	$(PY) project/train.py -c $(CONFIG)

test: $(TEST_READY) sshd lint
	$(WITH_SCRIPTS) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(TEST_READY)
	$(PY) -m ruff check .

# -- the environment -------------------------------------------------------------------------
# .venv is created here or not at all: an existing one is used, never deleted.
$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || { \
		echo "make: remotectl needs Python 3.9 or newer as '$(PYTHON)' (Debian/Ubuntu: sudo apt-get install -y python3 python3-venv; or PYTHON=python3.11 make ...)" >&2; exit 1; }
	@if [ ! -x $(VENV)/bin/python ]; then \
		if ! said=$$($(PYTHON) -m venv --system-site-packages $(VENV) 2>&1); then rm -rf $(VENV); \
			case "$$said" in *ensurepip*) $(MAKE) --no-print-directory venv-support \
				&& $(PYTHON) -m venv --system-site-packages $(VENV) || { rm -rf $(VENV); exit 1; } ;; \
			*) echo "$$said" >&2; exit 1 ;; esac; fi; \
		echo "make: created $(VENV) (with the system's site-packages, so a preinstalled torch stays visible)"; fi
	@$(PY) -m pip --version >/dev/null 2>&1 || { echo "make: $(VENV) exists but has no pip: remove it (rm -rf $(VENV)) and run make again" >&2; exit 1; }
	@touch $@

# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) apart, in python3-venv.
venv-support:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing python3-venv (Python's venv needs it on Debian/Ubuntu) ..."; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; \
	else echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: sudo apt-get install -y python3-venv" >&2; exit 1; fi

define install_torch
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
endef

$(VENV)/.train-ready: $(VENV)/.created setup.cfg pyproject.toml
	$(install_torch)
	$(PY) -m pip install -q -e '.[train]'
	@touch $@

$(VENV)/.test-ready: $(VENV)/.created setup.cfg pyproject.toml
	$(install_torch)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install-train:
	$(install_torch)
	$(PY) -m pip install -q -e '.[train]'

install-test:
	$(install_torch)
	$(PY) -m pip install -q -e '.[dev]'

sshd:
	@test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client) \
		|| { echo "the tests need OpenSSH's server: sudo apt-get install -y openssh-server" >&2; exit 1; }; }
