#!/usr/bin/env bash
# One idempotent set-up step shared by `make run` and `make test`.
#
# It installs the Debian packages MiniChat builds and tests with, fetches
# Apache Kafka (broker jars and their runtime dependencies) from Maven Central
# with mvn into .cache/kafka, and the Node `ws` package the interoperability
# test drives (tests/integration/test_interop.py) with npm into .cache/node.
# When everything is present it only checks and returns in about a second.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
WS_VERSION=${WS_VERSION:-8.23.1}

pkgs=(
    build-essential pkg-config
    nginx-core nginx-dev
    libhiredis-dev librdkafka-dev libmariadb-dev
    protobuf-c-compiler libprotobuf-c-dev
    libgrpc-dev
    check libssl-dev zlib1g-dev libjansson-dev
    redis-server redis-tools
    mariadb-server mariadb-client
    maven default-jre-headless
    python3 python3-pytest python3-websockets python3-pymysql
    procps curl
    # the browser test (tests/integration/test_browser.py) drives Debian's
    # headless Chromium over the DevTools protocol with python3-websockets
    chromium
    # `make fuzz` and the seed-corpus pass of `make test` build libFuzzer
    # targets (fuzz/) with clang; libFuzzer's runtime is in compiler-rt
    clang libclang-rt-14-dev
    # the chaos run (tests/chaos/, make chaos and test_chaos_short.py) cuts
    # the relay-workers' link with a table of its own
    nftables
    # `make deb` (debian/; dh_nginx comes with nginx-dev) and
    # tests/integration/test_packages.py, which installs what it built
    # (and has logrotate check the packages' /etc/logrotate.d files)
    debhelper dpkg-dev logrotate
)

# Node.js and npm for the `ws` interoperability test.  A machine may already
# have them from elsewhere (NodeSource's nodejs ships npm and conflicts with
# Debian's npm package): ask for Debian's only when the commands are missing.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing packages and not root; run as root or install them: ${missing[*]}" >&2
        exit 1
    fi
    # Packages such as nginx, redis-server and mariadb-server start a system
    # service from their postinst; MiniChat runs its own servers on loopback,
    # so keep the package scripts from starting anything.
    policy=/usr/sbin/policy-rc.d
    restore_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        restore_policy=1
    fi
    trap '[ $restore_policy = 1 ] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    # wait for a dpkg lock held by another apt run instead of failing at once
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kafka: the broker and its runtime dependencies from Maven Central.
# the cache directory names its contents: bump the suffix when the list changes
kdir=$top/.cache/kafka-$KAFKA_VERSION-2
if [ ! -f "$kdir/.complete" ]; then
    echo "setup: fetching Apache Kafka $KAFKA_VERSION from Maven Central"
    mkdir -p "$kdir/libs"
    cat > "$kdir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>minichat</groupId>
  <artifactId>kafka-fetch</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
POM
    (cd "$kdir" && mvn -q -B -Dmaven.repo.local="$top/.cache/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kdir/libs")
    touch "$kdir/.complete"
fi
ln -sfn "$(basename "$kdir")" "$top/.cache/kafka"

# Node `ws`, pinned, installed from the npm registry into the shared cache
# (.cache/node/ws-<version>-<recipe>/node_modules/ws), one installer at a time.
# the directory names its contents: bump the suffix when the recipe changes
wsdir=$top/.cache/node/ws-$WS_VERSION-1
if [ ! -f "$wsdir/.complete" ]; then
    mkdir -p "$top/.cache/node"
    exec 8>"$top/.cache/node/install.lock"
    flock 8
    if [ ! -f "$wsdir/.complete" ]; then
        echo "setup: installing Node ws $WS_VERSION from npm"
        rm -rf "$wsdir"
        mkdir -p "$wsdir"
        npm install --silent --prefix "$wsdir" --cache "$top/.cache/node/npm-cache" \
            --no-audit --no-fund --no-save --no-package-lock --no-update-notifier "ws@$WS_VERSION" >/dev/null
        node -e 'const ws = require(process.argv[1]); if (typeof ws.WebSocket !== "function") process.exit(1)' \
            "$wsdir/node_modules/ws"
        touch "$wsdir/.complete"
    fi
    exec 8>&-
fi
ln -sfn "$(basename "$wsdir")" "$top/.cache/node/ws"
echo "setup: ok"
