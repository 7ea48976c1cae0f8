#!/usr/bin/env bash
# Builds Centrifugo (the comparison server of `make bench`) once, from the Go
# module proxy, into the shared cache:
#
#   build.sh          prints the binary's path; builds it first when missing
#
# The binary lives in .cache/centrifugo/<version>/centrifugo, a directory
# that names its version, so a later bump builds beside the old one instead
# of trusting a stale file.  `go install` with -p 1 takes about ten minutes
# on this 2-core machine shared with other engineers; a finished build is
# marked by .complete and never redone.  One builder at a time: the cache is
# shared by several checkouts, so a second caller waits on the lock and then
# finds the finished binary.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=v6.9.1
dir=$top/.cache/centrifugo/$VERSION
bin=$dir/centrifugo

if [ -f "$dir/.complete" ] && [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { echo "centrifugo build: go is not installed" >&2; exit 1; }

mkdir -p "$top/.cache/centrifugo"
exec 9>"$top/.cache/centrifugo/build.lock"
flock 9
if [ -f "$dir/.complete" ] && [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi

echo "centrifugo build: go install centrifugo $VERSION into $dir (once, ~10 min)" >&2
rm -rf "$dir"
mkdir -p "$dir"
# GOBIN puts the binary straight into the cache; -p 1 keeps one compiler
# process so the build leaves the other core to whoever shares the machine;
# the version is stamped as Centrifugo's release builds do (go install
# alone leaves 0.0.0, which its log and connect replies would show)
GOBIN=$dir go install -p 1 -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=${VERSION#v}" \
    "github.com/centrifugal/centrifugo/v6@$VERSION" >&2
# the module the binary was built from, as Go recorded it
if ! go version -m "$bin" | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/centrifugal/centrifugo/v6[[:space:]]+$VERSION[[:space:]]"; then
    echo "centrifugo build: $bin was not built from centrifugo $VERSION" >&2
    exit 1
fi
touch "$dir/.complete"
exec 9>&-
echo "$bin"
