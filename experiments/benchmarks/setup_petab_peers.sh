#!/usr/bin/env bash
# Set up the peer tools for the PEtab benchmark (experiments/benchmarks/bench_petab.py):
# pyPESTO + AMICI (+ fides), in their own git-ignored virtual environment `.peer-venv`
# at the repository root, kept apart from mgjax's environment (no jax/mgjax imports cross).
#
#   bash experiments/benchmarks/setup_petab_peers.sh            # system libs + venv + pip installs
#   PEER_NO_JAX=1 bash experiments/benchmarks/setup_petab_peers.sh   # skip AMICI's optional JAX backend
#
# Then run the peer with the venv's bin first on PATH (AMICI calls `swig` and compiles
# the model with the C++ compiler when it imports a problem for the first time):
#
#   PATH="$PWD/.peer-venv/bin:$PATH" .peer-venv/bin/python experiments/benchmarks/petab_peer.py \
#       PROBLEM.yaml --starts STARTS.npy --out OUT.json
#
# Idempotent: packages already present are not installed again.
# Environment: PEER_PYTHON (interpreter for the venv, default python3),
#              PEER_VENV (venv folder, default .peer-venv at the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${PEER_VENV:-$ROOT/.peer-venv}"
PY="${PEER_PYTHON:-python3}"

# Versions measured with; pinned so the peer numbers are reproducible.
AMICI_VERSION="1.0.1"
PYPESTO_VERSION="0.7.0"
FIDES_VERSION="0.8.0"
SWIG_VERSION="4.5.1"   # pip-packaged swig: its `swig` lands in the venv's bin

# --- 1. system libraries AMICI builds against (BLAS, HDF5 headers, swig) ---------------
apt_pkgs=(libopenblas-dev swig libhdf5-serial-dev)
present() {  # libhdf5-serial-dev is a virtual package on recent Debian: libhdf5-dev provides it
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  [[ "$1" == libhdf5-serial-dev ]] && dpkg -s libhdf5-dev >/dev/null 2>&1
}
missing=()
for p in "${apt_pkgs[@]}"; do
  present "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing system packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "[setup] ERROR: need root (or sudo) to apt-get install ${missing[*]}." >&2
      echo "        AMICI needs a BLAS (libopenblas-dev) and the HDF5 headers to compile models." >&2
      exit 1
    fi
  fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; }; then
    echo "[setup] ERROR: apt-get install ${missing[*]} failed." >&2
    echo "        AMICI needs these to build its extension and the model modules:" >&2
    echo "        a CBLAS (libopenblas-dev), HDF5 headers (libhdf5-serial-dev) and SWIG." >&2
    echo "        Install them by other means (or point BLAS_LIBS/BLAS_CFLAGS at a CBLAS) and rerun." >&2
    exit 1
  fi
else
  echo "[setup] system packages present: ${apt_pkgs[*]}"
fi

# --- 2. the virtual environment -----------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
fi
# keep it out of git even if .gitignore lacks the entry
[[ -f "$VENV/.gitignore" ]] || echo '*' > "$VENV/.gitignore"

PIP=("$VENV/bin/python" -m pip)
have() {  # have DIST VERSION -> 0 when that exact version is installed in the venv
  local v
  v=$("$VENV/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
print(version(sys.argv[1]))
EOF
) || return 1
  [[ "$v" == "$2" ]]
}

export PATH="$VENV/bin:$PATH"   # the pip swig must be found while amici builds/imports

if have swig "$SWIG_VERSION"; then echo "[setup] swig $SWIG_VERSION present"; else
  echo "[setup] pip install swig==$SWIG_VERSION"
  "${PIP[@]}" install -q "swig==$SWIG_VERSION"
fi

if have amici "$AMICI_VERSION" && have pypesto "$PYPESTO_VERSION" && have fides "$FIDES_VERSION"; then
  echo "[setup] amici $AMICI_VERSION, pypesto $PYPESTO_VERSION, fides $FIDES_VERSION present"
else
  echo "[setup] pip install amici==$AMICI_VERSION pypesto==$PYPESTO_VERSION fides==$FIDES_VERSION (amici builds from source: a few minutes)"
  "${PIP[@]}" install "amici==$AMICI_VERSION" "pypesto[petab]==$PYPESTO_VERSION" "fides==$FIDES_VERSION"
fi

# AMICI's optional JAX backend (jax, diffrax, equinox, optimistix ...), for --backend amici-jax
if [[ "${PEER_NO_JAX:-0}" != "1" ]]; then
  if "$VENV/bin/python" -c "import jax, diffrax, equinox, optimistix" >/dev/null 2>&1; then
    echo "[setup] AMICI JAX extras present"
  else
    echo "[setup] pip install amici[jax]==$AMICI_VERSION (JAX backend extras)"
    "${PIP[@]}" install -q "amici[jax]==$AMICI_VERSION" \
      || echo "[setup] WARNING: the amici[jax] extras did not install; --backend amici-jax will report an error" >&2
  fi
fi

echo "[setup] versions:"
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for d in ("amici", "pypesto", "fides", "petab", "swig", "numpy", "scipy", "jax", "diffrax", "equinox", "optimistix"):
    try:
        print(f"  {d} {version(d)}")
    except PackageNotFoundError:
        print(f"  {d} (not installed)")
EOF
# smoke check: AMICI's extension loads and finds its own swig
"$VENV/bin/python" -c "import amici, pypesto, fides; print('[setup] ok: amici', amici.__version__)"
