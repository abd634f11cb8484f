#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: installs what is missing (apt-get, idempotent),
# configures and builds the release preset, then either runs the main job on the bundled
# default model (`demo`) or the whole test suite through CTest (`test`). .ci/run calls `test`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-demo}"
case "$mode" in demo|test|build) ;; *) echo "usage: scripts/kumihimo.sh [demo|test|build]" >&2; exit 2 ;; esac

# What the build and the tests need, as Debian 12 package names. libopenblas0-pthread matters:
# with only the reference BLAS libtorch's fp32 matmul is ~50x slower (FACTS).
packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libgtest-dev libgmock-dev
  qt6-base-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs="$(nproc)"
echo "== configure + build (release, $jobs jobs)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"

case "$mode" in
  demo)
    echo "== main job: inspect the bundled tiny llm-jp-3-style model"
    build/release/bin/kumihimo-cli inspect resources/models/tiny-llm-jp-3
    ;;
  test)
    echo "== tests"
    ctest --preset release
    ;;
  build) ;;
esac
