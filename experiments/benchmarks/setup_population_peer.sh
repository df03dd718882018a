#!/usr/bin/env bash
# Set up the peer of the population benchmark (experiments/benchmarks/bench_population.py):
# R with `nlme` (Lindstrom–Bates) and `deSolve` (the ODE peer, bench_population_ode.py), from
# Debian's packages. An optional benchmark peer, never a
# runtime dependency of mgjax.
#
#   bash experiments/benchmarks/setup_population_peer.sh
#
# Then the benchmark finds `Rscript` on PATH and runs experiments/benchmarks/nlme_peer.R:
#
#   python experiments/benchmarks/bench_population.py --sizes 100,200,1000
#
# Idempotent: packages already present are not installed again.
set -euo pipefail

apt_pkgs=(r-base-core r-cran-nlme r-cran-desolve)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing system packages: ${missing[*]} (a few minutes)"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "[setup] ERROR: need root (or sudo) to apt-get install ${missing[*]}." >&2
      exit 1
    fi
  fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; }; then
    echo "[setup] ERROR: apt-get install ${missing[*]} failed." >&2
    echo "        Install R (>= 4) and its recommended package nlme by other means" >&2
    echo "        (e.g. CRAN's binaries, then install.packages('nlme')) and rerun." >&2
    exit 1
  fi
else
  echo "[setup] system packages present: ${apt_pkgs[*]}"
fi

# smoke check: Rscript runs and loads nlme and deSolve
Rscript -e 'suppressPackageStartupMessages({library(nlme); library(deSolve)}); cat("[setup] ok:", R.version.string, "| nlme", as.character(packageVersion("nlme")), "| deSolve", as.character(packageVersion("deSolve")), "\n")'
