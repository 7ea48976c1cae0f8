#!/usr/bin/env bash
# One idempotent set-up step shared by `make run` and `make test`.
#
# It installs the Debian packages MiniChat builds and tests with, and fetches
# Apache Kafka (broker jars and their runtime dependencies) from Maven Central
# with mvn into .cache/kafka.  When everything is present it only checks and
# returns in about a second.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}

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
)

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
echo "setup: ok"
