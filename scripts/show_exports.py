"""Print what exports wrote under a directory: one line per manifest, then its files."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> int:
    manifests = sorted(Path(root).rglob("_manifest.json"))
    if not manifests:
        print(f"No _manifest.json under {root}: nothing was exported.", file=sys.stderr)
        return 1
    print(f"Wrote under {root}:")
    for path in manifests:
        manifest = json.loads(path.read_text())
        counts = ", ".join(f"{value:,} {key.replace('_', ' ')}" for key, value in manifest["counts"].items())
        window = manifest["window"]
        print(f"  {path.parent.relative_to(root)}/  [{window['date_from']}, {window['date_to']})  {counts}")
        for part in manifest["files"]:
            print(f"    {part['path']}  {part['rows']:,} rows  {part['bytes']:,} bytes  sha256 {part['sha256'][:12]}…")
        print("    _manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".demo/exports"))
