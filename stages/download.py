"""Stage download: get the images from the configured source into data/raw/<class>/.

Reads params ``data`` (Kaggle, a local zip or folder, or synthetic parts, plus data.extra). Writes
data/raw/<class>/<file> (a source's own test images under data/raw/<class>/source-test/, extras under
data/raw/<class>/extra/) and data/raw/SOURCE.json describing the source."""
from __future__ import annotations

import tempfile
from pathlib import Path
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.data.extras import copy_extras
from inspection.fsutil import staged_outputs, write_json
from inspection.artifacts import RAW, SOURCE_INFO
from inspection.data.acquire import (announce_quarantined, copy_tree, extract_zip, kaggle_download, local_source,
                                     named_as, resolve_source, write_synthetic)


def main() -> None:
    data = load_params().data
    with staged_outputs(RAW) as staged, tempfile.TemporaryDirectory(prefix="download-") as tmp:
        out = staged.path(RAW)
        out.mkdir()
        source = resolve_source(data)  # data.source, or for auto the one actually used (SOURCE.json says which)
        if data.source == "auto":
            print(f"download: data.source auto: using {source}"
                  + (f" ({data.local.path})" if source == "local" else f" ({data.kaggle.dataset})"))
        info: dict = {"source": source}
        quarantined: list[dict] = []  # corrupt archive members, file names that are not UTF-8
        if source == "kaggle":
            root = kaggle_download(data.kaggle.dataset, data.kaggle.version,
                                   auto_local=data.local.path if data.source == "auto" else None)
            # not the cache folder: SOURCE.json (and so data/raw's hash in dvc.lock) must not depend on the machine
            info.update(dataset=data.kaggle.dataset, version=data.kaggle.version)
            archive_sha = None
        elif source == "local":
            path = local_source(data)
            info.update(path=str(data.local.path))  # as written in params.yaml: no machine-specific folder
            if path.is_file():
                if path.suffix.lower() != ".zip":
                    raise UserError(f"data.local.path {path} is a file but not a .zip; give a .zip or a folder")
                root = Path(tmp) / "extracted"
                archive_sha = extract_zip(path, root, data.local.sha256, quarantined)
            else:
                if data.local.sha256:
                    raise UserError("data.local.sha256 is set but data.local.path is a folder; clear the sha256 or give the zip")
                root, archive_sha = path, None
        else:
            root = Path(tmp) / "synthetic"
            write_synthetic(data, root)
            info.update(per_class=data.synthetic.per_class, size=data.synthetic.size, seed=data.synthetic.seed)
            archive_sha = None
        with named_as(root, str(data.local.path) if source == "local" else str(root)):
            copied = copy_tree(data, root, out, quarantined)
        announce_quarantined(quarantined, data)
        info["quarantined"] = quarantined
        info["archive_sha256"] = archive_sha
        info["dataset_sha256"] = archive_sha or copied["files_sha256"]
        info.update(copied)
        copy_extras(data, out, Path(tmp), info)  # data.extra: further sources, merged (inspection/data/extras.py)
        write_json(out / SOURCE_INFO, info)
        print(f"download: {sum(copied['counts'].values())} files {copied['counts']} from {source} "
              f"(sha256 {info['dataset_sha256'][:12]}), source test folder: {copied['has_test_folder']}")


if __name__ == "__main__":
    cli(main)()
