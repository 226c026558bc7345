#!/usr/bin/env bash
# Each member's tests with only that member and the workspace members it declares installed (STYLE.md section 1:
# the shared dev venv installs everything, so it never notices an import that a member's pyproject does not
# declare). For each member: a venv under .venv-isolated/<member> (reused while its stamp is newer than every
# pyproject.toml), `pip install -e` of the member and of the workspace members its dependencies name, followed
# through their own dependencies (pip cannot find unpublished members, so they are passed as paths), plus pytest
# and pytest-xdist; then `pytest <member>/tests`. Third-party dependencies come from the members' pyproject files
# alone: no dev extras, so tests of optional features (onnx, transformers, trackers) skip there.
#
# Usage (repository root):  bash scripts/test_isolated.sh [MEMBER ...]     (default: every member)
#   MEMBER is a member folder (packages/core, cli) or its last part (core, segnext).  PYTHON=... picks the
#   interpreter that makes the venvs; ISOLATED_VENVS=... their folder; ISOLATED_CLEAN=1 removes each venv after
#   its tests (CI: a fresh clone reuses nothing, and one venv at a time needs a sixth of the disk). Each venv holds
#   torch and its CUDA libraries: about 5.6 GB and 1.5-3 minutes to install on a fresh machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENVS=${ISOLATED_VENVS:-.venv-isolated}
unset PYTHONPATH  # only what is installed counts

ALL=(packages/core packages/datasets packages/segnext packages/segvit packages/segdeformer cli)
members=()
for arg in "${@:-${ALL[@]}}"; do
  arg=${arg%/}
  case $arg in
    cli | */*) members+=("$arg") ;;
    *) members+=("packages/$arg") ;;
  esac
done

# The member folders a member installs with: itself and the workspace members its dependencies name, transitively.
closure() {
  "$PYTHON" - "$1" "${ALL[@]}" <<'EOF'
import re, sys, tomllib
member, folders = sys.argv[1], sys.argv[2:]
project = {f: tomllib.load(open(f"{f}/pyproject.toml", "rb"))["project"] for f in folders}
folder_of = {p["name"]: f for f, p in project.items()}
todo, seen = [member], []
while todo:
    f = todo.pop()
    if f in seen:
        continue
    seen.append(f)
    for dep in project[f].get("dependencies", []):
        name = re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower().replace("_", "-")
        if name in folder_of:
            todo.append(folder_of[name])
print(" ".join(seen))
EOF
}

# pip install into a venv, without the warnings of find-links folders that lack a package.
pip_in() {
  local venv=$1
  shift
  "$venv/bin/python" -m pip install --quiet "$@" 2>&1 | grep -v 'is ignored: it is neither a file nor a directory'
  return "${PIPESTATUS[0]}"
}

summary=()
status=0
for member in "${members[@]}"; do
  if [ ! -f "$member/pyproject.toml" ]; then
    echo "test_isolated: no member at $member (members: ${ALL[*]})" >&2
    exit 2
  fi
  name=$(basename "$member")
  venv=$VENVS/$name
  stamp=$venv/.installed
  start=$SECONDS
  if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml packages/*/pyproject.toml cli/pyproject.toml -newer "$stamp")" ]; then
    folders=$(closure "$member") || exit 2
    echo "== $name: fresh venv with ${folders// /, } (editable) + pytest"
    rm -rf "$venv"
    # shellcheck disable=SC2086  # one path per word
    "$PYTHON" -m venv "$venv" &&
      pip_in "$venv" --upgrade pip &&
      pip_in "$venv" $(printf -- '-e ./%s ' $folders) pytest pytest-xdist &&
      touch "$stamp"
    if [ ! -f "$stamp" ]; then
      summary+=("$name: install failed after $((SECONDS - start)) s")
      status=1
      continue
    fi
  fi
  installed=$((SECONDS - start))
  echo "== $name: pytest $member/tests"
  workers=()
  "$venv/bin/python" -c "import xdist" 2>/dev/null && workers=(-n 2 --dist loadfile)
  OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest "$member/tests" -q -p no:cacheprovider "${workers[@]}" \
    2>&1 | tee "$venv/pytest.log"
  rc=${PIPESTATUS[0]}
  result=$(grep -E '^=* ?[0-9]+ (passed|failed|error|skipped)|no tests ran' "$venv/pytest.log" | tail -1 | tr -d '=')
  summary+=("$name: rc=$rc, install ${installed} s, tests $((SECONDS - start - installed)) s: ${result# }")
  [ "$rc" -eq 0 ] || status=1
  [ "${ISOLATED_CLEAN:-0}" = 1 ] && rm -rf "$venv"
done

echo "== isolated members"
printf '%s\n' "${summary[@]}"
exit $status
