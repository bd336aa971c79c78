#!/usr/bin/env bash
# Installs what kmta needs on a fresh Debian machine: system packages (when root), a virtualenv
# with kmta and its test extras, and the Kafka broker jars from Maven Central.
# Usage: scripts/bootstrap.sh [test|demo|bench]   (idempotent; fast when already done)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-demo}"
PY="${PYTHON:-python3}"
VENV="${KMTA_VENV:-.venv}"

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
if [ "$what" = test ] || [ "$what" = bench ]; then
  have kcat || need_pkgs+=(kcat)
  have chromium || need_pkgs+=(chromium)
  have chromedriver || need_pkgs+=(chromium-driver)
  # a throwaway Postfix instance bounces real DSNs to kmta inbound (tests/postfix.py)
  [ -x /usr/sbin/postfix ] || need_pkgs+=(postfix)
fi
if [ "$what" = bench ]; then
  have smtp-sink || [ -x /usr/sbin/smtp-sink ] || need_pkgs+=(postfix)
  # --dkim: Postfix signs through OpenDKIM as a milter (scripts/bench.py, ops/opendkim.py)
  [ -x /usr/sbin/opendkim ] || need_pkgs+=(opendkim)
fi
have java || need_pkgs+=(openjdk-17-jre-headless)
have mvn || [ -n "${KAFKA_HOME:-}" ] || need_pkgs+=(maven)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: please install: ${need_pkgs[*]} (apt-get install ...)" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.kmta-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  touch "$stamp"
fi
# Kafka jars (cached under ~/.cache/kmta or $KMTA_HOME)
"$VENV/bin/python" - <<'PY'
import os
from ops.kafka import cli, manager
home = os.environ.get("KAFKA_HOME")
libs = manager.ensure_jars(cli.default_cache_dir(os.environ),
                           kafka_home=__import__("pathlib").Path(home) if home else None)
print(f"bootstrap: kafka jars in {libs}")
PY
