# droptrace: `make demo` installs everything and shows a live drop; `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
OBJDIR := tracer/_bpf
CLANG ?= clang
BPFTOOL ?= bpftool
ARCH := $(shell uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')
# The kernel half: one compiled unit per hook family, linked into the one object the loader
# opens (libbpf's static linker, `bpftool gen object`): maps used by several units are
# defined in bpf/maps.bpf.c, linked first (see there why), and declared extern in bpf/*.h.
# Headers hold types and helpers, never programs.
BPF_UNITS := bpf/maps.bpf.c bpf/drop.bpf.c tracer/causes/cause.bpf.c
BPF_PARTS := $(patsubst %.bpf.c,$(BUILD)/bpf/%.bpf.o,$(notdir $(BPF_UNITS)))
BPF_HEADERS := $(wildcard bpf/*.h)
BPF_OBJ := $(OBJDIR)/drop.bpf.o
vpath %.bpf.c $(sort $(dir $(BPF_UNITS)))

.PHONY: all install demo test test-kernels lint bpf cri wheel bench image clean

all: install

install:
	@bash scripts/install.sh

demo: install
	@bash scripts/demo.sh

test: install
	@bash scripts/test.sh

# Drop storm: throughput with and without tracers; writes bench-results.json (root, < 12 min).
bench: install
	@bash scripts/bench.sh

# The slower matrix: tests/matrix inside each Debian kernel of KERNELS under emulation.
KERNELS ?= 5.10 6.1 6.12
test-kernels: install
	@KERNELS="$(KERNELS)" bash scripts/test-kernels.sh

# The node agent's container image, localhost/droptrace:dev (root, Debian 12, a few minutes;
# downloads Debian packages). Not part of `make test`. IMAGE_ARCHIVE=FILE also saves it.
image: install
	@bash scripts/image.sh

# A wheel with the BPF object inside, in dist/ (compiled by the `bpf` target through setup.py).
# setuptools packages whatever an earlier build left in build/lib: start from nothing.
wheel: install
	rm -rf $(BUILD)/lib $(BUILD)/bdist.*
	$(PY) -m build --wheel --outdir dist .

lint: install
	$(VENV)/bin/ruff check tracer tests bench scripts setup.py
	$(VENV)/bin/ruff format --check tracer tests bench scripts setup.py
	$(VENV)/bin/mypy
	shellcheck scripts/*.sh .ci/run

# OBJDIR and BUILD may be set on the command line: setup.py builds into the wheel's tree.
bpf: $(BPF_OBJ) $(OBJDIR)/events.h $(OBJDIR)/build-id

$(BUILD)/vmlinux.h:
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: %.bpf.c $(BPF_HEADERS) $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BUILD) -Ibpf -Wall -Werror -c $< -o $@

$(OBJDIR)/drop.bpf.o: $(BPF_PARTS)
	@mkdir -p $(@D)
	$(BPFTOOL) gen object $@.tmp $^ && mv $@.tmp $@

$(OBJDIR)/events.h: bpf/events.h
	@mkdir -p $(OBJDIR)
	cp $< $@

# `droptrace --version`: clang writes no ELF build-id note into a BPF object, so the build id
# is a hash of the objects (in this order), recorded with the compiler that made them.
$(OBJDIR)/build-id: $(BPF_OBJ)
	{ echo "build_id $$(cat $(BPF_OBJ) | sha256sum | cut -c1-16)"; \
	  echo "objects $(notdir $(BPF_OBJ))"; \
	  echo "compiler $$($(CLANG) --version | head -1)"; } > $@.tmp && mv $@.tmp $@

# The CRI client's messages and stub from tracer/enrich/cri.proto, as tracer._cri.cri_pb2 and
# cri_pb2_grpc under PYOUT (grpcio-tools' protoc; the virtual proto path makes the stub import
# the messages by that package name). Built here, not compiled from the .proto at run time:
# that imported the compiler too, ~16 MB more resident and ~0.12 s more CPU on a CRI node.
PYOUT ?= .
CRI_OUT := $(PYOUT)/tracer/_cri
cri: $(CRI_OUT)/cri_pb2_grpc.py

$(CRI_OUT)/cri_pb2_grpc.py: tracer/enrich/cri.proto
	@mkdir -p $(@D)
	$(PY) -m grpc_tools.protoc --proto_path=tracer/_cri=tracer/enrich --python_out=$(PYOUT) \
	  --grpc_python_out=$(PYOUT) tracer/_cri/cri.proto

clean:
	rm -rf $(BUILD) $(OBJDIR) tracer/_cri dist
