# pool_health: PGXS build.  `make installcheck` runs all test suites
# (pg_regress, isolation, TAP) on throwaway instances with the preload; the
# README's test command (tools/test) wraps it with the set-up it needs.

MODULE_big = pool_health
EXTENSION = pool_health
DATA = $(wildcard sql/pool_health--*.sql)
PGFILEDESC = "pool_health - connection health, leak detection and cleanup"

OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))

PG_CPPFLAGS = -I$(srcdir)/src

# References from one file of the library to another's functions and
# variables bind inside it at link time (no PLT stub, no look-up through
# the GOT): the per-statement hooks call the accounting and the
# first-statement capture this way.  No pool_health symbol is meant to be
# interposed.
SHLIB_LINK += -Wl,-Bsymbolic

# Calls from the library into the server and libc load their address from
# the GOT (-fno-plt) instead of jumping through a PLT stub: one page fewer
# that every transaction touches (the GOT's page is read anyway, for the
# server's variables).  Each distinct page a transaction touches costs a
# TLB miss after every context switch; see docs/performance.md.
PG_CFLAGS = -fno-plt

# GNU libmicrohttpd serves pool_health.http_listen; without it the setting
# is compiled out (and refuses any value with a message saying so).
PH_MICROHTTPD := $(shell pkg-config --exists libmicrohttpd 2>/dev/null && echo yes)
ifeq ($(PH_MICROHTTPD),yes)
# The HTTP worker opens it (dlopen) at its start: not linked, so that
# backends do not map it and the libraries it needs at every fork.
PH_MICROHTTPD_SONAME := $(shell objdump -p "$$(pkg-config --variable=libdir libmicrohttpd)/libmicrohttpd.so" 2>/dev/null | awk '$$1 == "SONAME" {print $$2}')
ifeq ($(PH_MICROHTTPD_SONAME),)
PH_MICROHTTPD_SONAME := libmicrohttpd.so.12
endif
PG_CPPFLAGS += -DPH_HAVE_MICROHTTPD -DPH_MICROHTTPD_SONAME='"$(PH_MICROHTTPD_SONAME)"' \
	$(shell pkg-config --cflags libmicrohttpd)
else
$(warning libmicrohttpd not found (Debian: libmicrohttpd-dev): pool_health.http_listen is compiled out)
endif
# Warnings are errors in the test build (tools/test sets PH_WERROR=1).
ifdef PH_WERROR
PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers -Werror
endif

# pg_regress inputs in test/sql, expected output in test/expected (sql/
# holds only the install and update scripts); results in output_regress
# in order: the first creates the extension
REGRESS = pool_health_shapes pool_health_settings pool_health_levels \
	pool_health_policies pool_health_privileges pool_health_security \
	pool_health_bad_input pool_health_upgrade
REGRESS_OPTS = --temp-instance=tmp_check_regress \
	--temp-config=$(srcdir)/test/regress.conf --load-extension=dblink \
	--inputdir=$(srcdir)/test --outputdir=output_regress

ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec))
ISOLATION_OPTS = --temp-instance=tmp_check_iso \
	--temp-config=$(srcdir)/test/isolation.conf \
	--inputdir=$(srcdir)/test/isolation --outputdir=output_iso

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config

# rehome.spec stops the worker at its scan of pg_extension
# (get_extension_oid), which PostgreSQL 18 answers from a syscache
PH_PG_MAJOR := $(shell $(PG_CONFIG) --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
ifeq ($(shell test "$(PH_PG_MAJOR)" -ge 18 2>/dev/null && echo yes),yes)
ISOLATION := $(filter-out rehome,$(ISOLATION))
endif
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after PGXS, which resets it
PROVE_FLAGS = -I $(srcdir)/test/perl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_regress output_iso
