#!/usr/bin/env bash
# Quick start, one command: install CXR Node and run it with the embedded
# defaults (SQLite, embedded broker and worker, CPU) on port 11112, AE CXRNODE.
# Data go to ./.cxr-node unless CXR_NODE_HOME says otherwise.
set -euo pipefail
# An explicit (empty) extra: a bare `source` would hand it our own "$@".
source "$(dirname "${BASH_SOURCE[0]}")/install.sh" ""
exec cxr-node serve "$@"
