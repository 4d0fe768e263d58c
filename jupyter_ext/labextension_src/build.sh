#!/usr/bin/env bash
# Build the prebuilt JupyterLab extension into ../labextension (committed, shipped in the wheel).
# Needs Node.js/npm (npm registry) and the project's venv (jupyter-builder comes with jupyterlab).
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund --loglevel=error  # npm ci trips over rspack's optional platform binaries (npm 11)
npx tsc --sourceMap false
jupyter-builder build .
cat > ../labextension/install.json <<'JSON'
{
  "packageManager": "python",
  "packageName": "ad-inspect",
  "uninstallInstructions": "Use your Python package manager (pip, conda, etc.) to uninstall the package ad-inspect"
}
JSON
python3 - <<'PY'
import hashlib, pathlib
files = sorted(["package.json", "package-lock.json", "tsconfig.json", *map(str, pathlib.Path("src").glob("*")), *map(str, pathlib.Path("style").glob("*"))])
h = hashlib.sha256()
for f in files:
    h.update(f.encode() + b"\0" + pathlib.Path(f).read_bytes())
pathlib.Path("../labextension/source.sha256").write_text(h.hexdigest() + "\n")
print("sources", h.hexdigest())
PY
