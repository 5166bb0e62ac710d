#!/usr/bin/env bash
# Creates (or brings up to date) the virtual environment MONAI Label runs in. MONAI Label 0.8.5 pins numpy<2 and pulls
# torchvision and sam2, so it cannot share the project's venv. About 5 minutes and 8 GB the first time; afterwards pip
# only checks requirements.txt.
#   usage: integrations/monailabel/setup_venv.sh [VENV_DIR]   (default: integrations/monailabel/.venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c "import monailabel, monai, numpy, torch, nibabel, SimpleITK, skimage, cv2; print('MONAI Label', monailabel.__version__, '| MONAI', monai.__version__, '| numpy', numpy.__version__, '| torch', torch.__version__)"
