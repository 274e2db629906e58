# Two entry points that do all set-up on a fresh machine:
#   make sample   set up, then compress the bundled ResNet teacher for the cpu target
#   make test     set up, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
OUT    ?= out/resnet_mnist

.PHONY: setup sshd sample sample-cifar sample-distill test test-all teachers bench clean

setup: $(STAMP)

# torch is installed first and pinned to the CPU wheel; squeeze's own `torch>=2.6` is then
# already satisfied, so pip never pulls the multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	# NNCF (the openvino target's quantizer) JIT-compiles its CPU fake-quant extension on first use, ~1 min on 2
	# cores: built here with the rest of the install, not in a user's first quantize (NNCF falls back to
	# torch-native ops where it cannot compile, so a failure here is not fatal)
	-NNCF_EXTENSION_LOAD_TIMEOUT=0 $(BIN)/python -c "import nncf.torch.quantization.extensions as e, nncf.torch as t; t.force_build_cpu_extensions()" >/dev/null 2>&1
	touch $(STAMP)

# the whole chain (search -> distill -> prune -> INT8 QAD -> profile) at quick settings, ~3 min alone on 2 cores
sample: setup
	mkdir -p $(dir $(OUT))
	$(BIN)/squeeze compress samples/teachers/resnet_mnist.pt --recipe quick --target cpu --out $(OUT)

# the CIFAR-10 teacher at a quick recipe; the full set is read from SQUEEZE_DATA (default: ../shared/data, this
# workspace's copy), never downloaded
CIFAR_DATA ?= $(if $(SQUEEZE_DATA),$(SQUEEZE_DATA),../shared/data)
sample-cifar: setup
	mkdir -p out
	SQUEEZE_DATA=$(CIFAR_DATA) $(BIN)/squeeze compress samples/teachers/airbench_cifar.pt --recipe samples/recipes/airbench_cifar_quick.yaml --data cifar10 --target cpu --out out/airbench_cifar

# compress for real: distil a small ResNet student from the teacher, then export + profile both (~1.5 min)
sample-distill: setup
	mkdir -p out
	$(BIN)/squeeze compress samples/teachers/resnet_mnist.pt --recipe distill --student samples/students/resnet_small.json --epochs 4 --target cpu --out out/resnet_small

# the remote-target tests need an OpenSSH server binary (they start their own on loopback)
sshd:
	@test -x /usr/sbin/sshd || { echo "installing openssh-server for the SSH tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server) >/dev/null || \
	  { echo "could not install openssh-server: run 'sudo apt-get install -y openssh-server'"; exit 1; }; }

# two phases: the suite over one worker per core (pytest-xdist; each worker pinned to its core), then the few
# `serial` tests that need the whole quiet host (a CPU-burning neighbour, every core's thread settings)
test: setup sshd
	$(BIN)/python -m pytest -q -n auto -m 'not slow and not serial' --durations=15
	$(BIN)/python -m pytest -q -m 'serial and not slow' $$(grep -rl 'mark.serial' tests)

test-all: setup sshd
	$(BIN)/python -m pytest -q -m ''

teachers: setup
	$(BIN)/python samples/train_teachers.py

bench: setup
	$(BIN)/python bench/export_profile.py

clean:
	rm -rf $(VENV) out *.egg-info
