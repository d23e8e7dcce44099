#!/usr/bin/env bash
# The one install path for deepfake_lib: README, .ci/run and cluster.yaml all call this.
#
#   ./install.sh            install into ./.venv (created if missing) with the test extra
#                           (pytest, moto, h5py), skipped when up to date
#   ./install.sh --system   install into the current python3 without the test extra
#                           (cluster nodes, containers)
#
# Two steps because pip cannot express them in setup.cfg: face_recognition asks for the name
# `dlib` (a 9-minute source build; the `dlib-bin` wheel in setup.cfg provides the module), and
# facenet-pytorch pins ancient torch/numpy. Both are installed with --no-deps after the rest.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
no_deps=(face_recognition==1.3.0 face_recognition_models==0.3.0 facenet-pytorch==2.6.0)

if [ "${1:-}" = "--system" ]; then
  python=python3
  extras=""
else
  extras="[test]"
  [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
  python="$root/.venv/bin/python"
fi

stamp="$("$python" -c 'import sys; print(sys.prefix)')/.deepfake_lib-installed"
want=$(cat "$root/setup.cfg" "$root/install.sh" | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

"$python" -m pip install --quiet --upgrade pip
"$python" -m pip install --quiet -e "$root$extras"
"$python" -m pip install --quiet --no-deps "${no_deps[@]}"
"$python" -c 'import deepfake_lib.media.faces as f; f.check_installed()'
echo "$want" > "$stamp"
echo "deepfake_lib installed into $("$python" -c 'import sys; print(sys.prefix)')"
