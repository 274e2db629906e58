# Two entry points that do all set-up on a fresh machine:
#   make sample   set up, then compress the bundled ResNet teacher for the cpu target
#   make test     set up, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
OUT    ?= out/resnet_mnist

.PHONY: setup sample sample-distill test test-all teachers bench clean

setup: $(STAMP)

# torch is installed first and pinned to the CPU wheel; squeeze's own `torch>=2.6` is then
# already satisfied, so pip never pulls the multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

sample: setup
	mkdir -p $(dir $(OUT))
	$(BIN)/squeeze compress samples/teachers/resnet_mnist.pt --target cpu --out $(OUT)

# compress for real: distil a small ResNet student from the teacher, then export + profile both (~1.5 min)
sample-distill: setup
	mkdir -p out
	$(BIN)/squeeze compress samples/teachers/resnet_mnist.pt --student samples/students/resnet_small.json --epochs 4 --target cpu --out out/resnet_small

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ''

teachers: setup
	$(BIN)/python samples/train_teachers.py

bench: setup
	$(BIN)/python bench/export_profile.py

clean:
	rm -rf $(VENV) out *.egg-info
