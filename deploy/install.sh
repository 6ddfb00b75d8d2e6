#!/usr/bin/env bash
# Install CXR Node into a virtual environment: `source deploy/install.sh [EXTRA]`.
# Sets VENV and puts it first on PATH. The venv lives outside the checkout
# (CXR_NODE_VENV, default ~/.cache/cxr-node/venv) so fresh clones reuse it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CXR_NODE_VENV:-$HOME/.cache/cxr-node/venv}"
EXTRA="${1:-}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "cxr-node needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
spec="$REPO"
[ -n "$EXTRA" ] && spec="$REPO[$EXTRA]"
# -e: migrations and model weights are read from the checkout.
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet -e "$spec"
export PATH="$VENV/bin:$PATH"
export VENV
