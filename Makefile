# Two commands for a new user: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.core-stamp
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
# PyTorch's CPU wheels; for a CUDA build: make TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: venv demo test test-fast fuzz bench lint format corpora clean train-% prior-% embedder-%

venv: $(STAMP)

# torch first, from TORCH_INDEX: a plain `torch` requirement would pull a multi-GB CUDA build. The demo needs the
# core only; tests, training, the web app and the benchmarks need the extras.
$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(PY) -m pip install -q -e '.[train,app,bench,dev]'
	touch $(STAMP)

demo: $(CORE)
	$(VENV)/bin/audiovae demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Fuzz the .avae decoder (src/audiovae/codec/fuzz.py): N mutated files from SEED in WORKERS processes; the
# inputs that fail are kept in runs/fuzz.
N ?= 100000
SEED ?= 0
WORKERS ?= 1
fuzz: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m audiovae.codec.fuzz -n $(N) --seed $(SEED) --workers $(WORKERS) --save runs/fuzz

# Speed and peak memory (1-, 10-, 60-minute files) of the shipped models; quality, codec and
# classification benchmarks on the corpus test splits when built.
bench: $(STAMP)
	$(VENV)/bin/audiovae bench speed --model speech16k --model music24k
	$(VENV)/bin/audiovae bench memory --model speech16k --model music24k
	@for m in speech16k music24k; do \
	  if [ -f corpora/$$m/manifest.jsonl ]; then \
	    for split in unseen test; do \
	      $(VENV)/bin/audiovae bench quality --model $$m --manifest corpora/$$m/manifest.jsonl --split $$split && \
	      $(VENV)/bin/audiovae bench codec --model $$m --manifest corpora/$$m/manifest.jsonl --split $$split || exit 1; \
	    done; \
	  else echo "$$m quality and codec benchmarks skipped: build the corpus first (make corpora)"; fi; \
	done
	@if [ -f corpora/speech16k/manifest.jsonl ] && [ -f corpora/music24k/manifest.jsonl ]; then \
	  $(VENV)/bin/audiovae bench classify --corpora corpora; \
	else echo "classification benchmark skipped: build both corpora first (make corpora)"; fi

# Reproduce a shipped model from scratch: corpus, stage 1, stage 2 (GAN), export. Hours on a CPU;
# re-running resumes where it stopped.
train-%: $(STAMP)
	$(VENV)/bin/audiovae data build $*
	$(VENV)/bin/audiovae train --config recipes/$*/train.yaml --threads 1 \
	  $$( [ -f runs/$*/checkpoints/last.ckpt ] && echo --resume )
	$(VENV)/bin/audiovae train --config recipes/$*/gan.yaml --threads 1 --run-dir runs/$*-gan \
	  $$( [ -f runs/$*-gan/checkpoints/last.ckpt ] && echo --resume || echo --init runs/$*/checkpoints/last.ckpt )
	$(VENV)/bin/audiovae export runs/$*-gan/checkpoints/last.ckpt runs/$*/export

# Train a shipped model's latent prior and store it with the model (pretrained/NAME.prior.safetensors).
prior-%: $(STAMP)
	$(VENV)/bin/audiovae train-prior --config recipes/$*/prior.yaml --threads 1 --export \
	  $$( [ -f runs/$*-prior/checkpoints/last.ckpt ] && echo --resume )

# Train a shipped model's embedding head (the `learned` pooling) and store it with the model
# (pretrained/NAME.embed.safetensors); add LATENTS=runs/NAME-prior/latents to reuse the prior's latent caches.
embedder-%: $(STAMP)
	$(VENV)/bin/audiovae train-embedder --config recipes/$*/embedder.yaml --threads 1 --export \
	  $(if $(LATENTS),--latents $(LATENTS)) $$( [ -f runs/$*-embedder/checkpoints/last.ckpt ] && echo --resume )

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests recipes

format: $(STAMP)
	$(VENV)/bin/ruff format src tests recipes

corpora: $(STAMP)
	$(VENV)/bin/audiovae data build speech16k
	$(VENV)/bin/audiovae data build music24k

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
