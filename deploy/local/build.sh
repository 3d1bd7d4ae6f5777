#!/usr/bin/env bash
# Builds (or reuses) the local environment's binaries and jars in a versioned cache outside the repo.
#
#   deploy/local/build.sh [component ...]     components: k8s etcd minio kafka kafka4 helm kwok elasticmq (default: all)
#
# Cache: ${TIDAL_TOOLS_DIR:-$HOME/.cache/tidal/tools}/<component>-<version>/, with a `.complete` marker
# holding a fingerprint of the recipe; a warm run only checks markers. Logs: $TIDAL_TOOLS_DIR/logs/.
# If KUBEBUILDER_ASSETS names a directory with etcd, kube-apiserver and kube-controller-manager,
# the k8s and etcd builds are skipped and those binaries are used (envtest's convention).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS=${TIDAL_TOOLS_DIR:-$HOME/.cache/tidal/tools}
LOGS=$TOOLS/logs
mkdir -p "$TOOLS" "$LOGS"

K8S_VERSION=1.34.4
ETCD_VERSION=3.6.16
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
KAFKA_VERSION=3.9.1
KAFKA4_VERSION=4.1.1
HELM_VERSION=v3.22.0
KWOK_VERSION=v0.8.0
ELASTICMQ_VERSION=1.6.11

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--p=2}"

fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# stage NAME DIR FINGERPRINT COMMAND...: run COMMAND unless DIR/.complete holds FINGERPRINT.
stage() {
  local name=$1 dir=$2 fp=$3; shift 3
  if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$fp" ]]; then
    echo "[build] $name: cached in $dir"
    return 0
  fi
  local log=$LOGS/$name.log start=$SECONDS
  echo "[build] $name: building into $dir (log: $log)"
  rm -rf "$dir" && mkdir -p "$dir"
  # Show progress every 30 s so a cold build is never minutes of silence.
  ( while sleep 30; do echo "[build] $name: still building, $((SECONDS - start)) s so far; last log line: $(tail -n 1 "$log" 2>/dev/null | cut -c1-120)"; done ) &
  local ticker=$!
  if ! "$@" >"$log" 2>&1; then
    kill "$ticker" 2>/dev/null || true
    echo "[build] $name: FAILED after $((SECONDS - start)) s; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  kill "$ticker" 2>/dev/null || true
  echo "$fp" >"$dir/.complete"
  echo "[build] $name: done in $((SECONDS - start)) s"
}

build_k8s() {
  local out=$1 bd ldf="-s -w" minor
  bd=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldf="$ldf -X $p.gitTreeState=clean -X $p.buildDate=$bd"
  done
  cd "$HERE/tools/k8s"
  go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldf" -o "$out/" ./cmd/...
  "$out/kube-apiserver" --version
}

build_etcd() {
  cd "$HERE/tools/etcd"
  go build -trimpath -o "$1/etcd" .
  "$1/etcd" --version
}

build_minio() {
  GOBIN=$1 go install "github.com/minio/minio@$MINIO_VERSION"
}

build_helm() {
  # The ldflags of helm's own Makefile: its version, and the Kubernetes version `helm template`
  # and `helm lint` assume (that of its client-go, v0.37 -> 1.37) instead of the 1.20 default.
  local v=helm.sh/helm/v3 ldf="-s -w"
  ldf="$ldf -X $v/internal/version.version=$HELM_VERSION -X $v/internal/version.gitTreeState=clean"
  for p in pkg/lint/rules pkg/chartutil; do
    ldf="$ldf -X $v/$p.k8sVersionMajor=1 -X $v/$p.k8sVersionMinor=37"
  done
  GOBIN=$1 go install -trimpath -ldflags "$ldf" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$1/helm" version --short
}

build_kwok() {
  # kwok (the fake kubelet) and the stage configs it needs (--config), copied out of the module
  # cache so a run does not depend on GOMODCACHE.
  local stages
  GOBIN=$1 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  mkdir -p "$1/stages"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$stages/$f" "$1/stages/$(tr / - <<<"$f")"
  done
  "$1/kwok" --version
}

build_kafka() {
  local out=$1 version=$2 reload4j=$3 work
  work=$(mktemp -d)
  cp "$HERE/tools/kafka/pom.xml" "$work/pom.xml"
  if [[ $reload4j == no ]]; then
    # Kafka 4 ships log4j2 inside its own dependencies; drop the reload4j binding.
    # Kafka 4 logs through log4j2 but its POM has no SLF4J -> log4j2 bridge: swap reload4j's
    # binding for log4j-slf4j-impl, or the broker logs nothing at all.
    python3 - "$work/pom.xml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
bridge = """
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>"""
s = re.sub(r"\s*<!-- Kafka 3.x.*?</dependency>", bridge, s, count=1, flags=re.S)
open(p, "w").write(s)
PY
  fi
  (cd "$work" && mvn -B -q -Dkafka.version="$version" package)
  mv "$work/target/libs" "$out/libs"
  rm -rf "$work"
  ls "$out/libs" | wc -l
}

build_elasticmq() {
  # ElasticMQ (an SQS-compatible server, speaks SQS's JSON protocol) as its runtime classpath.
  local work
  work=$(mktemp -d)
  cp "$HERE/tools/elasticmq/pom.xml" "$work/pom.xml"
  (cd "$work" && mvn -B -q -Delasticmq.version="$ELASTICMQ_VERSION" package)
  mv "$work/target/libs" "$1/libs"
  rm -rf "$work"
  ls "$1/libs" | wc -l
}

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(k8s etcd minio kafka kafka4 helm kwok elasticmq)
total=${#want[@]} i=0
for c in "${want[@]}"; do
  i=$((i + 1))
  echo "[build] stage $i/$total: $c"
  case $c in
    k8s)
      if [[ -n ${KUBEBUILDER_ASSETS:-} && -x $KUBEBUILDER_ASSETS/kube-apiserver ]]; then
        echo "[build] k8s: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"; continue
      fi
      d=$TOOLS/k8s-v$K8S_VERSION
      stage k8s "$d" "$(fingerprint "$HERE/tools/k8s/go.mod" "$HERE/tools/k8s/go.sum" "$HERE"/tools/k8s/cmd/*/main.go)" build_k8s "$d" ;;
    etcd)
      if [[ -n ${KUBEBUILDER_ASSETS:-} && -x $KUBEBUILDER_ASSETS/etcd ]]; then
        echo "[build] etcd: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"; continue
      fi
      d=$TOOLS/etcd-v$ETCD_VERSION
      stage etcd "$d" "$(fingerprint "$HERE/tools/etcd/go.mod" "$HERE/tools/etcd/go.sum" "$HERE/tools/etcd/main.go")" build_etcd "$d" ;;
    minio)
      d=$TOOLS/minio-$MINIO_VERSION
      stage minio "$d" "$MINIO_VERSION" build_minio "$d" ;;
    kafka)
      d=$TOOLS/kafka-$KAFKA_VERSION
      stage kafka "$d" "$(fingerprint "$HERE/tools/kafka/pom.xml")-$KAFKA_VERSION" build_kafka "$d" "$KAFKA_VERSION" yes ;;
    kafka4)
      d=$TOOLS/kafka-$KAFKA4_VERSION
      stage kafka4 "$d" "$(fingerprint "$HERE/tools/kafka/pom.xml")-$KAFKA4_VERSION-log4j2bridge" build_kafka "$d" "$KAFKA4_VERSION" no ;;
    helm)
      d=$TOOLS/helm-$HELM_VERSION
      stage helm "$d" "$HELM_VERSION-k8s1.37" build_helm "$d" ;;
    kwok)
      d=$TOOLS/kwok-$KWOK_VERSION
      stage kwok "$d" "$KWOK_VERSION-fast-stages" build_kwok "$d" ;;
    elasticmq)
      d=$TOOLS/elasticmq-$ELASTICMQ_VERSION
      stage elasticmq "$d" "$(fingerprint "$HERE/tools/elasticmq/pom.xml")-$ELASTICMQ_VERSION" build_elasticmq "$d" ;;
    *) echo "[build] unknown component: $c" >&2; exit 2 ;;
  esac
done
echo "[build] all $total stages ready in $TOOLS"
