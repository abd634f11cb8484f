#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: installs what is missing (apt-get, idempotent),
# configures and builds the release preset, then either runs the main job on the bundled
# default model (`demo`) or the whole test suite through CTest (`test`). .ci/run calls `test`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-demo}"
case "$mode" in demo|test|build) ;; *) echo "usage: scripts/kumihimo.sh [demo|test|build]" >&2; exit 2 ;; esac

# What the build and the tests need, as Debian 12 package names. libopenblas0-pthread matters:
# with only the reference BLAS libtorch's fp32 matmul is ~50x slower (FACTS). libmecab-dev splits
# Japanese words for ruri v1/v2's tokenizer; mecab-utils' mecab-dict-index builds the tests' tiny
# dictionary (ruri's own, unidic-lite, is a pip package: not installed here).
packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libfaiss-dev libgtest-dev libgmock-dev libicu-dev
  qt6-base-dev libqcustomplot-dev
  libmecab-dev mecab-utils
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
    # The default job until trained demo models ship: evolve the mix of two tiny models that
    # reproduces a target merged from them with known per-layer-group weights (80/20 then 30/70).
    cli=build/release/bin/kumihimo-cli
    echo "== main job: evolve a merge recipe against the synthetic target (resources/evolve/)"
    $cli make-tiny llama -o build/demo/a --seed 1 --dtype F32 --force >/dev/null
    $cli make-tiny llama -o build/demo/b --seed 2 --dtype F32 --force >/dev/null
    $cli merge resources/evolve/target.yaml -o build/demo/target --overwrite >/dev/null 2>&1
    rm -rf build/demo/run
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -x build/release/bin/kumihimo ]; then
      echo "== opening the workbench on the Evolve view (the search runs there)"
      build/release/bin/kumihimo --evolve resources/evolve/synthetic.yaml --run-dir build/demo/run
    else
      $cli evolve resources/evolve/synthetic.yaml -o build/demo/run
      echo "== the recipe it found (target shares of a: 0.8 for layers 0-1, 0.3 for layers 2-3)"
      cat build/demo/run/best.yaml
    fi
    ;;
  test)
    echo "== tests"
    ctest --preset release
    ;;
  build) ;;
esac
