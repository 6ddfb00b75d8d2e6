#!/usr/bin/env bash
# Quick start, the other command: install what the tests need and run them.
#   apt: orthanc, orthanc-dicomweb, chromium, npm, dcmtk, dicom3tools, redis-server,
#        prometheus (promtool),
#        postgresql (if missing)
#   npm: the prebuilt OHIF viewer (@ohif/app) for tests/viewer
#   pip: the project with its test extra (into $CXR_NODE_VENV)
#   then: ruff check, ruff format --check and mypy; any finding fails the run
#   starts Redis and PostgreSQL on loopback when they are not already running
# Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
[ -x /usr/bin/storescu ] || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v Orthanc >/dev/null || need_apt+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
command -v chromium >/dev/null || need_apt+=(chromium)   # tests/viewer, driven by Playwright
command -v npm >/dev/null || need_apt+=(npm)             # fetches the OHIF viewer below
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v promtool >/dev/null || need_apt+=(prometheus)  # promtool checks deploy/monitoring
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
    echo "starting Redis on 127.0.0.1:6379" >&2
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! port_open 5432; then
    echo "starting PostgreSQL on 127.0.0.1:5432" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
for _ in $(seq 50); do port_open 6379 && port_open 5432 && break; sleep 0.2; done

source "$REPO/deploy/install.sh" test

# OHIF for tests/viewer: npm's @ohif/app ships the built app (dist/), fetched
# once at install time; the tests serve it on loopback and never go online.
OHIF_VERSION=3.13.2
export CXR_NODE_OHIF_DIR="${CXR_NODE_OHIF_DIR:-$HOME/.cache/cxr-node/ohif-$OHIF_VERSION}"
if [ ! -f "$CXR_NODE_OHIF_DIR/index.html" ]; then
    echo "fetching @ohif/app@$OHIF_VERSION from npm" >&2
    ohif_tmp="$(mktemp -d)"
    (cd "$ohif_tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null && tar xzf ohif-app-*.tgz)
    mkdir -p "$CXR_NODE_OHIF_DIR"
    cp -r "$ohif_tmp/package/dist/." "$CXR_NODE_OHIF_DIR/"
    rm -rf "$ohif_tmp"
fi
export CXR_NODE_ARTIFACTS="${CXR_NODE_ARTIFACTS:-$REPO/tests/.artifacts}"   # screenshots

# The tests use database "test" as user postgres; a fresh Debian cluster has
# neither trust auth nor that database, so give postgres a password and create it.
export CXR_NODE_TEST_POSTGRES="${CXR_NODE_TEST_POSTGRES:-postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test}"
if ! python -c "import sqlalchemy as sa, os; sa.create_engine(os.environ['CXR_NODE_TEST_POSTGRES']).connect().close()" 2>/dev/null; then
    echo "preparing PostgreSQL role and database for the tests" >&2
    as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    as_root su postgres -c "createdb test" 2>/dev/null || true
fi

# The checks that hold: lint, format and types over the packages, then the tests.
echo "ruff check, ruff format --check, mypy (node, workers, models)" >&2
ruff check .
ruff format --check .
mypy

set +e
python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": that is a failure of this script too.
exit $rc
