# MiniChat build, stack and tests.  `make run` and `make test` are the two
# commands of the README; both begin with scripts/setup.sh (idempotent).

SHELL      := /bin/bash
TOP        := $(CURDIR)
B          := $(TOP)/build
GEN        := $(B)/gen
CC         ?= cc
OPT        ?= -O2 -g
WARN       := -Wall -Wextra -Werror
PKGS       := libprotobuf-c openssl jansson zlib
CFLAGS_ALL  = $(OPT) $(WARN) -std=gnu11 -fPIC -D_GNU_SOURCE -I$(TOP)/lib/include -I$(GEN) \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(shell pkg-config --cflags libmariadb 2>/dev/null) $(EXTRA_CFLAGS)
LIBDEPS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lmariadb -lpthread

LIB_SRC    := $(wildcard lib/src/*.c)
LIB_OBJ    := $(patsubst lib/src/%.c,$(B)/lib/%.o,$(LIB_SRC)) $(B)/lib/minichat.pb-c.o
LIB        := $(B)/libminichat.a
# what the services' /status pages name as their build
MC_BUILD   := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
# the module's (nginx's Makefile compiles it, with its own flags): a header,
# rewritten only when the name changes, so the module is rebuilt only then
BUILD_H    := $(GEN)/minichat_build.h
BUILD_H_NEW := \#define MC_BUILD_NAME "$(MC_BUILD)"
$(shell mkdir -p $(GEN) && { [ "$$(cat $(BUILD_H) 2>/dev/null)" = '$(BUILD_H_NEW)' ] \
          || printf '%s\n' '$(BUILD_H_NEW)' > $(BUILD_H); })

RELAY_SRC  := $(wildcard relay-worker/*.c)
RELAY_OBJ  := $(patsubst relay-worker/%.c,$(B)/relay-worker/%.o,$(RELAY_SRC))
CONS_SRC   := $(wildcard roomlist-consumer/*.c)
CONS_OBJ   := $(patsubst roomlist-consumer/%.c,$(B)/roomlist-consumer/%.o,$(CONS_SRC))
LOADGEN_SRC := $(wildcard bench/loadgen/*.c)
LOADGEN_OBJ := $(patsubst bench/loadgen/%.c,$(B)/loadgen/%.o,$(LOADGEN_SRC))
FLOOR_SRC  := $(wildcard bench/floor/*.c)
FLOOR_OBJ  := $(patsubst bench/floor/%.c,$(B)/floor/%.o,$(FLOOR_SRC))

MODULE     := $(B)/nginx/ngx_http_minichat_module.so
NGX_SRC    := /usr/share/nginx/src
MOD_SRC    := $(wildcard ngx_minichat_module/*.c ngx_minichat_module/*.h) ngx_minichat_module/config

UNIT_TESTS := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))

.PHONY: all setup module run stop status test test-unit test-unit-asan services-asan test-integration integration-pass token \
        conformance fuzz fuzz-build fuzz-seeds fuzz-targets clean bench-tools bench-idle bench chaos deb

all: $(LIB) $(B)/bin/relay-worker $(B)/bin/roomlist-consumer $(B)/bin/minichat-token $(B)/bin/minichat-ban $(MODULE) \
     bench-tools $(B)/bin/relay-forge

setup:
	@bash scripts/setup.sh

# --- generated protobuf code ------------------------------------------------
$(GEN)/minichat.pb-c.c $(GEN)/minichat.pb-c.h: proto/minichat.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto proto/minichat.proto

$(GEN)/lua_scripts.h: $(wildcard lua/*.lua lua/*.lua.in) scripts/lua2c.sh
	@mkdir -p $(GEN)
	bash scripts/lua2c.sh lua $@

# --- shared library ---------------------------------------------------------
$(B)/lib/%.o: lib/src/%.c $(wildcard lib/include/minichat/*.h) $(GEN)/minichat.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/lib/minichat.pb-c.o: $(GEN)/minichat.pb-c.c
	@mkdir -p $(@D)
	$(CC) $(filter-out -Werror,$(CFLAGS_ALL)) -c $< -o $@

$(LIB): $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# --- services ---------------------------------------------------------------
$(B)/relay-worker/%.o: relay-worker/%.c $(wildcard relay-worker/*.h) $(wildcard lib/include/minichat/*.h) $(GEN)/minichat.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -DMC_BUILD='"$(MC_BUILD)"' $(shell pkg-config --cflags grpc rdkafka) -c $< -o $@

# the objects that print MC_BUILD are built again when the name changes
# (BUILD_H is rewritten only then), so /status and /metrics name one build
$(B)/relay-worker/metrics.o $(B)/relay-worker/status.o $(B)/roomlist-consumer/status.o: $(BUILD_H)

$(B)/bin/relay-worker: $(RELAY_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(OPT) $(EXTRA_LDFLAGS) -o $@ $(RELAY_OBJ) $(LIB) $(shell pkg-config --libs grpc rdkafka) $(LIBDEPS)

$(B)/roomlist-consumer/%.o: roomlist-consumer/%.c $(wildcard roomlist-consumer/*.h) $(wildcard lib/include/minichat/*.h) $(GEN)/minichat.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -DMC_BUILD='"$(MC_BUILD)"' $(shell pkg-config --cflags rdkafka hiredis) -c $< -o $@

$(B)/bin/roomlist-consumer: $(CONS_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(OPT) $(EXTRA_LDFLAGS) -o $@ $(CONS_OBJ) $(LIB) $(shell pkg-config --libs rdkafka hiredis) $(LIBDEPS)

$(B)/bin/minichat-token: lib/tools/minichat-token.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(EXTRA_LDFLAGS) -o $@ $< $(LIB) $(LIBDEPS)

$(B)/bin/minichat-ban: lib/tools/minichat-ban.c $(LIB) $(GEN)/lua_scripts.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(EXTRA_LDFLAGS) $(shell pkg-config --cflags hiredis) -o $@ $< $(LIB) $(shell pkg-config --libs hiredis) $(LIBDEPS)

# relay-forge: a gRPC caller that is not a relay-worker, for the mesh's mTLS
# tests (tests/integration/test_peer_tls.py)
$(B)/bin/relay-forge: tests/tools/relay-forge.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(shell pkg-config --cflags grpc) -o $@ $< $(LIB) $(shell pkg-config --libs grpc) $(LIBDEPS)

# --- benchmark tools (bench/) -------------------------------------------------
# loadgen: the WebSocket load generator (bench/loadgen/loadgen.h)
$(B)/loadgen/%.o: bench/loadgen/%.c $(wildcard bench/loadgen/*.h) $(wildcard lib/include/minichat/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/bin/loadgen: $(LOADGEN_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(OPT) $(EXTRA_LDFLAGS) -o $@ $(LOADGEN_OBJ) $(LIB) $(LIBDEPS)

# floor: the raw epoll broadcaster make bench compares with (bench/floor/floor.h)
$(B)/floor/%.o: bench/floor/%.c bench/floor/floor.h $(wildcard lib/include/minichat/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/bin/floor: $(FLOOR_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(OPT) $(EXTRA_LDFLAGS) -o $@ $(FLOOR_OBJ) $(LIB) $(LIBDEPS)

# kafka_fill: fills the messages topic for bench/consumer_rate.sh
$(B)/bin/kafka_fill: bench/kafka_fill.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(shell pkg-config --cflags rdkafka) -o $@ $< $(LIB) $(shell pkg-config --libs rdkafka) $(LIBDEPS)

# raw_insert and history_load: scenario 5 of make bench (bench/scenario_5.sh)
$(B)/bin/raw_insert: bench/raw_insert.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LIBDEPS)

$(B)/bin/history_load: bench/history_load.c $(B)/loadgen/hist.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -I$(TOP)/bench -o $@ $< $(B)/loadgen/hist.o $(LIB) $(LIBDEPS)

bench-tools: $(B)/bin/loadgen $(B)/bin/kafka_fill $(B)/bin/floor $(B)/bin/raw_insert $(B)/bin/history_load

# 10,000 then 100,000 idle connections on one node (bench/idle.sh; starts
# the stack if needed, replaces node a's nginx for the run).  N="10000"
# runs fewer.
bench-idle: setup all
	@bash bench/idle.sh $(N)

# issue 9's scenarios, MiniChat beside the floor (bench/floor) and
# Centrifugo (when built: bench/centrifugo/) in one run; one table printed,
# JSON and Markdown in bench/results/ (bench/README.md).  Starts the stack
# if needed and leaves it running.  make test runs only its smoke mode
# (tests/integration/test_bench_smoke.py).
bench: setup all
	@bash bench/bench.sh

# --- nginx module (out of tree, with Debian's configure flags) ---------------
# nginx's configure rewrites object paths with sed expressions that also hit
# ".c", ".cc" or ".S" inside directory names (a checkout in /tmp/tmp.Sx...
# builds objects into a path that does not exist).  It is therefore given
# the checkout through a symlink whose name has no dot.
# The module's config finds libminichat.a and the generated headers in
# MINICHAT_BUILD (this B).  NGX_CC_OPT and NGX_LD_OPT, when set, go to
# configure as --with-cc-opt and --with-ld-opt (the Debian package build
# passes dpkg-buildflags' hardening flags there, as Debian's own modules do).
NGX_LINK   := /tmp/minichat-nginx-$(shell printf %s "$(TOP)" | md5sum | cut -c1-16)
NGX_BUILD  := $(NGX_LINK)$(patsubst $(TOP)%,%,$(B))/nginx
NGX_CC_OPT ?=
NGX_LD_OPT ?=

$(B)/nginx/Makefile: ngx_minichat_module/config
	@mkdir -p $(B)/nginx
	ln -sfn $(TOP) $(NGX_LINK)
	cd $(NGX_SRC) && source ./conf_flags && \
	  MINICHAT_BUILD=$(NGX_LINK)$(patsubst $(TOP)%,%,$(B)) ./configure "$${NGX_CONF_FLAGS[@]}" \
	    $(if $(NGX_CC_OPT),--with-cc-opt="$(NGX_CC_OPT)") $(if $(NGX_LD_OPT),--with-ld-opt="$(NGX_LD_OPT)") \
	    --add-dynamic-module=$(NGX_LINK)/ngx_minichat_module --builddir=$(NGX_BUILD) > $(B)/nginx/configure.log 2>&1 \
	  || { tail -30 $(B)/nginx/configure.log; exit 1; }

$(MODULE): $(B)/nginx/Makefile $(MOD_SRC) $(LIB) $(GEN)/lua_scripts.h $(BUILD_H)
	ln -sfn $(TOP) $(NGX_LINK)
	@# nginx's Makefile links the module from its own objects only: a newer
	@# libminichat.a or Lua header would not relink or rebuild it
	rm -f $(MODULE) $(NGX_BUILD)/addon/ngx_minichat_module/*.o
	$(MAKE) -s -f $(NGX_BUILD)/Makefile -C $(NGX_SRC) modules > $(B)/nginx/build.log 2>&1 \
	  || { cat $(B)/nginx/build.log | grep -v '^make' | tail -40; exit 1; }

module: $(MODULE)

# --- Debian packages ---------------------------------------------------------
# libnginx-mod-http-minichat, minichat-relay-worker, minichat-roomlist-consumer
# and minichat-common from debian/ (docs/operations.md, "Install from
# packages") into build/deb/, with their .buildinfo and .changes; nothing is
# written beside the checkout.  debian/rules builds into build/debian.
DEB_OUT    := $(B)/deb

deb:
	@rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)
	DEB_DIR=$(DEB_OUT) dpkg-buildpackage -b --no-sign -j2 \
	  --buildinfo-option=-u$(DEB_OUT) --buildinfo-file=$(DEB_OUT)/minichat.buildinfo \
	  --changes-option=-u$(DEB_OUT) --changes-file=$(DEB_OUT)/minichat.changes > $(B)/deb.log 2>&1 \
	  || { tail -40 $(B)/deb.log; exit 1; }
	@ls -1 $(DEB_OUT)/*.deb

# --- unit tests (check), plain and under ASan/UBSan --------------------------
# the relay-worker's producer, compiled into its test against librdkafka's mock cluster
$(B)/tests/test_relay_kafka: tests/unit/test_relay_kafka.c relay-worker/kafka.c relay-worker/relay.h $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(shell pkg-config --cflags rdkafka) -o $@ $< $(LIB) \
	  $(shell pkg-config --libs check hiredis rdkafka) $(LIBDEPS)

# which workers a chat message goes to, compiled into its test with msg_pack.c
$(B)/tests/test_worker_users: tests/unit/test_worker_users.c relay-worker/worker_users.c relay-worker/msg_pack.c \
  relay-worker/relay.h $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Irelay-worker -o $@ $< relay-worker/worker_users.c relay-worker/msg_pack.c $(LIB) \
	  $(shell pkg-config --libs check) $(LIBDEPS)

# the load generator's protocol tables, compiled into their test
$(B)/tests/test_loadgen_proto: tests/unit/test_loadgen_proto.c $(wildcard bench/loadgen/*.c bench/loadgen/*.h) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(shell pkg-config --libs check) $(LIBDEPS)

$(B)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(shell pkg-config --libs check hiredis) $(LIBDEPS)

test-unit: $(addprefix $(B)/tests/,$(UNIT_TESTS))
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; CK_FORK=yes $(B)/tests/$$t; done

SAN_OPT := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

test-unit-asan:
	$(MAKE) B=$(B)/asan OPT="$(SAN_OPT)" EXTRA_LDFLAGS="-fsanitize=address,undefined" test-unit

# the relay-worker and the roomlist-consumer built the same way, into
# build/asan/bin, for test-integration's sanitizer pass
services-asan:
	$(MAKE) --no-print-directory B=$(B)/asan OPT="$(SAN_OPT)" EXTRA_LDFLAGS="-fsanitize=address,undefined" \
	  $(B)/asan/bin/relay-worker $(B)/asan/bin/roomlist-consumer

# --- libFuzzer targets (fuzz/, see fuzz/README.md) --------------------------
# Built with clang into build/fuzz/: the lib sources are compiled again with
# the same sanitizers and libFuzzer's coverage hooks (fuzzer-no-link: the
# instrumentation without libFuzzer's main), each fuzz/fuzz_*.c target is
# linked with -fsanitize=fuzzer.  `make fuzz` runs every target for
# FUZZ_SECONDS (default 30) and fails on the first crash, leak or sanitizer
# report; `make fuzz-seeds` (part of `make test`) runs each target once over
# its committed seed corpus, a cheap regression check.
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_B       := $(B)/fuzz

# (run inside the sub-make below, where B is build/fuzz and CC is clang)
$(B)/bin/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(filter-out -fsanitize=fuzzer-no-link,$(CFLAGS_ALL)) -fsanitize=fuzzer -o $@ $< $(LIB) $(LIBDEPS)

fuzz-targets: $(addprefix $(B)/bin/,$(FUZZ_TARGETS))

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not found; run make setup" >&2; exit 1; }
	@$(MAKE) --no-print-directory B=$(FUZZ_B) CC=$(FUZZ_CC) \
	  OPT="-O1 -g -fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzz-targets

fuzz-seeds: fuzz-build
	@bash scripts/fuzz.sh seeds $(FUZZ_B)/bin $(FUZZ_TARGETS)

fuzz: setup fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh run $(FUZZ_B)/bin $(FUZZ_TARGETS)

# --- local stack ------------------------------------------------------------
# REDIS=single (one Redis) or REDIS=cluster (three masters, three replicas);
# TLS=1: nginx serves wss:// and https:// (a dev CA made at start, docs/tls.md)
REDIS      ?= single
TLS        ?= 0

run: setup all
	@MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) bash scripts/stack.sh start
	@MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) bash scripts/stack.sh banner

stop:
	@bash scripts/stack.sh stop

status:
	@bash scripts/stack.sh status

token: $(B)/bin/minichat-token
	@$(B)/bin/minichat-token --secret-file $(TOP)/conf/dev-jwt-secret $(USER)

# The suite runs twice: against a single Redis over plain ws:// and http://,
# then against a Redis Cluster over wss:// and https:// (TLS=1, which also
# has the relay-workers and the consumer reach Kafka and MySQL over TLS,
# docs/operations-security.md; the harness
# trusts the stack's dev CA, test_tls.py checks that TLS is really on, and
# the few tests that cannot run over TLS skip with their reason).
# test_cluster.py runs only in the cluster pass.  The browser tests (the
# page, the client library in test_client_js.py, and the browser's own
# WebSocket in test_browser_interop.py) run in both: ws:// on the single
# stack, wss:// with the dev certificate pinned on the cluster stack.  The
# Autobahn run (test_conformance.py, against the echo endpoint, which never
# touches Redis) runs in the single pass only: it tests the frame code.  So
# does the package test (test_packages.py: make deb, apt-get install, the
# installed programs against the plain stack).
CLUSTER_PYTEST_ARGS := --ignore=test_conformance.py --ignore=test_packages.py

# The third pass runs the stack's relay-workers and roomlist-consumer under
# ASan/UBSan (services-asan) through the tests that drive them hardest
# (the stream, the member lists, restarts, deadlocks, the consumer's
# failures, pushes, SIGHUP); check-logs fails it on any sanitizer report
# in their logs.  Tests that start a relay-worker of their own use build/bin.
SAN_TESTS := test_relay_stream.py test_peer_users.py test_relay_member_lists.py test_relay_requests.py test_chat.py test_db_retry.py \
  test_chaos_short.py test_consumer_batching.py test_consumer_commit_refused.py test_consumer_fenced.py test_push.py \
  test_read_flush.py test_message_path.py test_sighup.py test_service_metrics.py

test-integration: all services-asan
	@$(MAKE) --no-print-directory integration-pass REDIS=single TLS=0 PYTEST_ARGS=
	@$(MAKE) --no-print-directory integration-pass REDIS=cluster TLS=1 PYTEST_ARGS="$(CLUSTER_PYTEST_ARGS)"
	@$(MAKE) --no-print-directory integration-pass REDIS=single TLS=0 TESTS="$(SAN_TESTS)" SERVICE_BIN=$(B)/asan/bin

integration-pass:
	@echo "== integration tests against REDIS=$(REDIS) TLS=$(TLS)$(if $(SERVICE_BIN), services from $(SERVICE_BIN))"
	@MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) MINICHAT_SERVICE_BIN=$(SERVICE_BIN) bash scripts/stack.sh start
	cd tests/integration && MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) MINICHAT_SERVICE_BIN=$(SERVICE_BIN) \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) $(or $(TESTS),.) ; \
	  rc=$$?; bash $(TOP)/scripts/stack.sh stop; bash $(TOP)/scripts/check-logs.sh || rc=1; exit $$rc

# Autobahn|Testsuite against node a's echo endpoint, every case group of
# issue 7 (1-7, 9, 10, 12, 13); the stack is started if it is not running
# and left running (make stop).  CASES="1.*,2.*" runs fewer.
conformance: setup all
	@MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=0 bash scripts/stack.sh start
	@bash scripts/conformance.sh $(CASES)

# Fault injection under steady sends on both nodes (tests/chaos/chaos.py,
# docs/chaos.md): kill -9 each relay-worker, the roomlist-consumer and an
# nginx worker, restart Kafka, stop and lag the MySQL replica, cut the
# relay-workers' link; after each, MySQL must hold exactly the acked
# messages and every listener every stored one, in order.  Prints a table;
# fails on any loss, duplicate, hole or missed delivery.  Starts the stack
# if needed and leaves it running (make stop).  FAULTS="relay,Kafka" runs
# fewer; GIVE_UP=1 adds per room a client that never retries a failed send;
# make test runs a short version (test_chaos_short.py).
FAULTS  ?= all
GIVE_UP ?= 0

chaos: setup all
	@MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) bash scripts/stack.sh start
	MINICHAT_REDIS=$(REDIS) MINICHAT_TLS=$(TLS) /usr/bin/python3 tests/chaos/chaos.py --faults "$(FAULTS)" \
	  $(if $(filter 1,$(GIVE_UP)),--give-up)

test: setup
	$(MAKE) all
	$(MAKE) test-unit
	$(MAKE) test-unit-asan
	$(MAKE) fuzz-seeds
	$(MAKE) test-integration

clean:
	rm -rf $(B)
