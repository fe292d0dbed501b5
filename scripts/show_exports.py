"""Print what exports committed under a directory: one line per manifest (window, counts, run), then its files.

Files a manifest does not list are named too: ``part-*`` files of a run still writing, or of a failed or
killed run (removed by the next successful commit). Readers never read those; only the listed files count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> int:
    manifests = sorted(Path(root).rglob("_manifest.json"))
    if not manifests:
        print(f"No _manifest.json under {root}: nothing was committed.", file=sys.stderr)
        return 1
    print(f"Committed under {root}:")
    for path in manifests:
        manifest = json.loads(path.read_text())
        counts = ", ".join(f"{value:,} {key.replace('_', ' ')}" for key, value in manifest["counts"].items())
        window = manifest["window"]
        run = manifest.get("run_token", "(no token: written by version 0.1)")
        print(f"  {path.parent.relative_to(root)}/  [{window['date_from']}, {window['date_to']})  {counts}  run {run}")
        for part in manifest["files"]:
            print(f"    {part['path']}  {part['rows']:,} rows  {part['bytes']:,} bytes  sha256 {part['sha256'][:12]}…")
        print("    _manifest.json")
        listed = {Path(part["path"]).name for part in manifest["files"] if "/" not in part["path"]}
        unlisted = sorted(p.name for p in path.parent.glob("part-*") if p.name not in listed)
        if unlisted:
            print(f"    not in this snapshot (a run in progress, or strays of a failed one): {', '.join(unlisted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".demo/exports"))
