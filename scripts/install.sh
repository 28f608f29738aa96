#!/usr/bin/env bash
# Install MapSage Workbench into ./.venv (idempotent: a second run only checks).
#   scripts/install.sh          the workbench and its runtime dependencies
#   scripts/install.sh --test   plus the test tools, and Debian's chromium for the browser tests and a local
#                               SLURM (slurmctld slurmd slurm-client munge) for the SLURM tests (as root)
# torch comes from the package registry's newest build (it runs on CPU where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip wheel setuptools
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "note: install Debian's chromium (sudo apt-get install chromium) to run the browser tests" >&2
  fi
fi
if [ "${1:-}" = "--test" ] && ! command -v slurmctld >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       slurmctld slurmd slurm-client munge >/dev/null) \
      || echo "warning: could not install SLURM; the SLURM tests will be skipped (outside CI)" >&2
  else
    echo "note: install Debian's SLURM (sudo apt-get install slurmctld slurmd slurm-client munge) and run the" \
         "tests as root to run the SLURM tests" >&2
  fi
fi
