# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch is pinned: a CPU wheel of 2.13.0 is available offline; an unpinned torch pulls CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[gpu,dask,test,plot,loaders]"
	touch $(STAMP)

demo: install
	$(BIN)/cpgen copypaste --src examples/coco --out demo-out/copypaste --num-images 12 --overwrite -j $(JOBS)
	$(BIN)/cpgen validate demo-out/copypaste
	$(BIN)/cpgen cutmix --src examples/folders --out demo-out/cutmix --num-images 24 --soft-labels --overwrite -j $(JOBS)
	$(BIN)/cpgen preview demo-out/copypaste --out demo-out/copypaste-preview.png
	$(BIN)/cpgen preview demo-out/cutmix --out demo-out/cutmix-preview.png
	@echo "copy-paste demo: demo-out/copypaste (annotations.json + images/)"
	@echo "cutmix demo:     demo-out/cutmix (images/, labels.csv, classes.json, soft_labels.npy)"
	@echo "previews:        demo-out/copypaste-preview.png, demo-out/cutmix-preview.png"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check cpgen tests bench examples
	$(BIN)/ruff format --check cpgen tests bench examples

bench: install
	$(BIN)/python -m bench.bench

clean:
	rm -rf $(VENV) demo-out build *.egg-info
