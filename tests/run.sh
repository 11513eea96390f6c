#!/bin/sh
# Builds tenure and runs the whole test suite through ctest.
#
#   tests/run.sh                 everything (unit and integration)
#   tests/run.sh -L unit         any arguments go to ctest
#   tests/run.sh -R fixture -V
#
# Installs missing Debian packages through deploy/setup.sh, always runs the
# incremental build (with -Werror) so code changes are picked up, and exits
# non-zero when anything fails.
#
# Environment:
#   TN_SANITIZE=address,undefined | thread
#                         build with that sanitizer into build-asan (or
#                         build-tsan for thread) instead of build
#   TENURE_BUILD_DIR      build directory (overrides the above)
#   TN_TEST_JOBS          tests run in parallel (default 2; the integration
#                         tests pick free ports, so they do not collide)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SANITIZE=${TN_SANITIZE:-}
case "$SANITIZE" in
    "") DEFAULT_BUILD=$ROOT/build ;;
    *thread*) DEFAULT_BUILD=$ROOT/build-tsan ;;
    *) DEFAULT_BUILD=$ROOT/build-asan ;;
esac
BUILD=${TENURE_BUILD_DIR:-$DEFAULT_BUILD}
JOBS=${TN_TEST_JOBS:-2}

step() {
    printf '\n==> %s\n' "$*"
}

# Packages: setup.sh only calls apt-get when something is missing, so this
# is quick on a machine that has everything.
step "checking build dependencies (deploy/setup.sh --no-build)"
"$ROOT/deploy/setup.sh" --no-build

step "configuring $BUILD${SANITIZE:+ (TN_SANITIZE=$SANITIZE)}"
cmake -S "$ROOT" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE="${TENURE_BUILD_TYPE:-RelWithDebInfo}" \
    -DTN_WERROR=ON -DTN_SANITIZE="$SANITIZE" >/dev/null

step "building"
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)"

if [ -n "$SANITIZE" ]; then
    # Fail on the first report, with a stack, in every test and daemon.
    # handle_abort: a fail-stop abort() (the FSM's, say, which prints
    # nothing) leaves its stack in the daemon's log too.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:handle_abort=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
fi

step "running tests: ctest --output-on-failure -j$JOBS${*:+ $*}"
cd "$BUILD"
# Our own -j comes first so that one given on the command line wins.
exec ctest --output-on-failure --no-tests=error -j"$JOBS" "$@"
