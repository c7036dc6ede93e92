# Two commands set a fresh machine up (see README "Quick start"):
#   make train   installs the template's needs and trains the default config
#   make test    installs what the tests need and runs them
# torch is pinned only where none is installed: on Colab the preinstalled CUDA build is kept;
# on a CPU-only machine the pin takes the CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
CONFIG ?= project/config.json

.PHONY: train test setup-train setup-test lint sshd

setup-train:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_PIN)"
	$(PYTHON) -m pip install -q -e '.[train]'

train: setup-train
	$(PYTHON) project/train.py -c $(CONFIG)

sshd:
	@test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client) \
		|| { echo "the tests need OpenSSH's server: sudo apt-get install -y openssh-server" >&2; exit 1; }; }

setup-test: sshd
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_PIN)"
	$(PYTHON) -m pip install -q -e '.[dev]'

lint:
	$(PYTHON) -m ruff check .

test: setup-test lint
	$(PYTHON) -m pytest
