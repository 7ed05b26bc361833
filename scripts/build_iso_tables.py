"""Regenerate src/langmoe/data/iso/*.tsv from Debian's iso-codes JSON files (package `iso-codes`, LGPL-2.1+).

    apt-get install iso-codes && python scripts/build_iso_tables.py [/usr/share/iso-codes/json]

Same iso-codes version => byte-identical tables. The version used is written into the tables' README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/iso-codes/json")
OUT = Path(__file__).resolve().parents[1] / "src" / "langmoe" / "data" / "iso"


def _clean(name: str) -> str:
    return " ".join(name.replace("\t", " ").split())


def main() -> None:
    langs = json.loads((SRC / "iso_639-3.json").read_text(encoding="utf-8"))["639-3"]
    part2 = json.loads((SRC / "iso_639-2.json").read_text(encoding="utf-8"))["639-2"]
    biblio = {e["alpha_3"]: e["bibliographic"] for e in part2 if "bibliographic" in e}
    rows = ["alpha_3\talpha_2\tbibliographic\tname"]
    for e in sorted(langs, key=lambda e: e["alpha_3"]):
        rows.append("\t".join([e["alpha_3"], e.get("alpha_2", ""), biblio.get(e["alpha_3"], ""), _clean(e["name"])]))
    (OUT / "iso639-3.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    scripts = json.loads((SRC / "iso_15924.json").read_text(encoding="utf-8"))["15924"]
    rows = ["alpha_4\tname"] + [f"{e['alpha_4']}\t{_clean(e['name'])}" for e in sorted(scripts, key=lambda e: e["alpha_4"])]
    (OUT / "iso15924.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "iso-codes"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version = "unknown"
    print(f"wrote {OUT}/iso639-3.tsv ({len(langs)} languages) and iso15924.tsv ({len(scripts)} scripts) "
          f"from iso-codes {version}")


if __name__ == "__main__":
    main()
