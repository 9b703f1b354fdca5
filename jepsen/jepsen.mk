# Jepsen-style fault suite (see jepsen/README.md). Included by the top Makefile.
# Needs root and docker.io (`make jepsen-deps` installs it); starts its own dockerd when none runs.
JEPSEN       := $(GO) run ./jepsen/cmd/jepsen
JEPSEN_FLAGS ?=
# The smoke suite replays fixed schedules (seeds 1-4) so CI is comparable run to run; the full
# suite draws new ones from the clock. Override with JEPSEN_SEED=N.
JEPSEN_SEED  ?=
RUNDIR       ?= $(lastword $(sort $(filter-out jepsen/runs/last-%,$(wildcard jepsen/runs/2*))))

.PHONY: jepsen jepsen-smoke jepsen-faulty jepsen-image jepsen-check jepsen-deps jepsen-test jepsen-clean

## jepsen: 5 nodes (+2 spares), every nemesis incl. membership, 10 runs of 120 s; exits non-zero on any violation.
jepsen: jepsen-deps
	$(JEPSEN) run --mode full $(if $(JEPSEN_SEED),--seed $(JEPSEN_SEED)) $(JEPSEN_FLAGS)

## jepsen-smoke: 3 nodes, 4 short runs (partitions, crashes, pauses) and a membership run (2 spares), ~5 minutes.
jepsen-smoke: jepsen-deps
	$(JEPSEN) run --mode smoke --seed $(or $(JEPSEN_SEED),1) $(JEPSEN_FLAGS)

## jepsen-faulty: a kvd built with -tags jepsen_fault_staleread under leader faults;
## passes (exit 0) only if at least one run catches stale reads (CAUGHT); exits 1 when none does.
jepsen-faulty: jepsen-deps
	$(JEPSEN) run --mode faulty --seed $(or $(JEPSEN_SEED),1) $(JEPSEN_FLAGS)

## jepsen-image: the node image for users (ringkv:dev; see jepsen/docker-compose.yml).
jepsen-image: jepsen-deps
	$(JEPSEN) image --tag ringkv:dev

## jepsen-check RUNDIR=jepsen/runs/<timestamp>-<seed>: re-check a saved run (default: the newest).
jepsen-check:
	@test -n "$(RUNDIR)" || { echo "no run folder: make jepsen-check RUNDIR=jepsen/runs/<timestamp>-<seed>"; exit 2; }
	$(JEPSEN) check $(RUNDIR)

## jepsen-deps: install docker.io and iptables with apt-get when dockerd is missing (root only).
jepsen-deps:
	@command -v dockerd >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "jepsen: needs root and docker.io (apt-get install -y docker.io iptables)"; exit 2; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iptables util-linux; }

## jepsen-test: the suite's Go tests, Docker ones included (RINGKV_JEPSEN=1).
jepsen-test: jepsen-deps
	RINGKV_JEPSEN=1 $(GO) test -count=1 -timeout 30m -v ./jepsen/...

jepsen-clean:
	rm -rf jepsen/runs
