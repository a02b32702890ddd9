#!/usr/bin/env bash
# Installs every build and run dependency of calibq from Debian 12's packages.
# Idempotent and quiet: packages already present are not fetched again.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-pthread    # Debian's LibTorch calls libblas.so.3, which is the netlib reference
                          # BLAS unless OpenBLAS is installed (alternatives): 10x slower GEMMs
  libopencv-dev           # images: decoding, resizing, drawing fixtures
  libyaml-cpp-dev         # experiment configs
  libeigen3-dev
  libcli11-dev            # the calibq command line
  libfmt-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev        # CPU benchmarks
  nlohmann-json3-dev      # safetensors headers, HF configs, results
  libsentencepiece-dev    # tokenizer.model
  libpcre2-dev            # Unicode-aware pre-tokenizer regexes of byte-level BPE
  gnuplot-nox             # plots
  clang libclang-rt-14-dev  # libFuzzer target for the safetensors header parser
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${#missing[@]} package(s): ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: all ${#PACKAGES[@]} dependencies present"
