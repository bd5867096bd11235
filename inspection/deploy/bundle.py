"""The browser bundle: the inspector page, the vendored TF.js runtime and the converted model in one folder.

``build_bundle`` copies web/src, the TF.js and WebAssembly-backend files from node_modules (``VENDOR``) with
their licences (``VENDOR_LICENSES``) and a vendor/VERSIONS.json, the TF.js model (models/tfjs) and its
metadata.json, and returns the sizes of the model, vendor and page parts. ``ensure_node_modules`` supplies the
npm packages: web/node_modules, or the main workspace's in a DVC temporary workspace, when it holds exactly the
versions in web/package-lock.json; otherwise it runs `npm ci --prefix web`.
"""
from __future__ import annotations

from inspection.artifacts import REPO

import shutil
import subprocess
from pathlib import Path
from inspection.errors import UserError
from inspection.fsutil import dir_size, read_json, write_json
from inspection.artifacts import METADATA_FILE, NODE_MODULES, WEB_SRC


VENDOR = {  # bundle file -> file in web/node_modules
    "vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "vendor/tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "vendor/tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "vendor/tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "vendor/tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
    # TIFF (what many industrial cameras write) is decoded by UTIF in the page; its deflate needs pako's inflate
    "vendor/UTIF.js": "utif/UTIF.js",
    "vendor/pako_inflate.min.js": "pako/dist/pako_inflate.min.js",
}
# the vendored runtime's licences travel with it (the npm packages ship none; both declare Apache-2.0, whose text
# is the project's LICENSE); bundle file -> file in the repository
VENDOR_LICENSES = {
    "vendor/LICENSE-Apache-2.0.txt": REPO / "LICENSE",
    "vendor/THIRD_PARTY_NOTICES.txt": REPO / "web/THIRD_PARTY_NOTICES.txt",
}


def node_modules_dir() -> Path:
    """web/node_modules here, or the main workspace's when this is a DVC temporary workspace without one
    (`dvc exp run --temp` / `--queue` run in <repo>/.dvc/tmp/exps/tmpXXXX, where npm ci never ran)."""
    from inspection.artifacts import main_root

    local = Path(NODE_MODULES)
    if local.is_dir():
        return local
    main = main_root() / NODE_MODULES
    return main if main.is_dir() else local


def ensure_node_modules() -> Path:
    """The locked npm packages: web/node_modules (or the main workspace's) when it holds exactly the locked
    versions, else `npm ci` here. Returns the node_modules folder to use."""
    found = node_modules_dir()
    if node_modules_match_lock(found):
        return found
    if shutil.which("npm") is None:
        raise UserError("npm not found; install Node.js 18+ with npm, then run: npm ci --prefix web")
    print("web: npm ci (installing the locked TF.js packages)")
    res = subprocess.run(["npm", "ci", "--prefix", "web", "--no-audit", "--no-fund"], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"npm ci failed ({tail}); check access to the npm registry and run: npm ci --prefix web")
    return Path(NODE_MODULES)


def node_modules_match_lock(modules: Path = NODE_MODULES) -> bool:
    locked = read_json("web/package-lock.json")["packages"]
    for key, entry in locked.items():
        if not key.startswith("node_modules/") or entry.get("optional"):
            continue
        installed = Path(modules) / key[len("node_modules/"):] / "package.json"
        if not installed.exists() or read_json(installed).get("version") != entry.get("version"):
            return False
    return True


def build_bundle(dest: Path, metadata: dict, tfjs: Path = Path("models/tfjs"), modules: Path = NODE_MODULES,
                 src: Path = WEB_SRC) -> dict[str, int]:
    """Copy the page, the vendored runtime and the model into dest; returns file sizes by part. Contents only,
    with normal modes (0644): node_modules' executable bits would make `dvc checkout` report the bundle modified."""
    shutil.copytree(src, dest, copy_function=shutil.copyfile)
    for rel, pkg_file in VENDOR.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(modules) / pkg_file, dest / rel)
    for rel, repo_file in VENDOR_LICENSES.items():
        shutil.copyfile(repo_file, dest / rel)
    packages = [read_json(Path(modules) / pkg / "package.json")
                for pkg in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "utif", "pako")]
    write_json(dest / "vendor/VERSIONS.json", {p["name"]: {"version": p["version"], "license": p.get("license")}
                                               for p in packages})
    shutil.copytree(tfjs, dest / "model", copy_function=shutil.copyfile)
    write_json(dest / METADATA_FILE, metadata)
    for f in dest.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    return {"model": dir_size(dest / "model"), "vendor": dir_size(dest / "vendor"),
            "app": sum(f.stat().st_size for f in dest.iterdir() if f.is_file())}
