"""Print one line per tested ComfyUI / frontend combination from the JUnit XML files .ci/run wrote.

    python .ci/summary.py RESULTS_DIR      (each run: <n>-<slug>.xml + <n>-<slug>.txt with its label and rc)

Exit status 1 when any combination failed, errored, exited non-zero, collected nothing or wrote no XML.
"""
from __future__ import annotations

import glob
import os
import sys
import xml.etree.ElementTree as ET


def counts(xml_path: str) -> dict[str, float]:
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite in suites:
        for key in total:
            total[key] += float(suite.get(key, 0) or 0)
    return total


def main(results_dir: str) -> int:
    runs = sorted(glob.glob(os.path.join(results_dir, "*.txt")))
    if not runs:
        print(f"no test runs recorded in {results_dir}")
        return 1
    ok = True
    lines = []
    for meta_path in runs:
        with open(meta_path, encoding="utf-8") as f:
            meta = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        xml_path = meta_path[:-4] + ".xml"
        rc = int(meta.get("rc", "1"))
        if os.path.exists(xml_path):
            c = counts(xml_path)
            passed = int(c["tests"] - c["failures"] - c["errors"] - c["skipped"])
            good = rc == 0 and c["failures"] == 0 and c["errors"] == 0 and passed > 0
            stats = (f"{passed:4d} passed {int(c['failures']):3d} failed {int(c['errors']):3d} errors "
                     f"{int(c['skipped']):3d} skipped  {c['time']:6.0f} s")
        else:
            good, stats = False, "no results (pytest did not run to the end)"
        ok &= good
        lines.append(f"{'PASS' if good else 'FAIL'}  {meta.get('label', '?'):58s} [{meta.get('selection', '')}]"
                     f"  {stats}  rc={rc}")
    print("\n".join(lines))
    print("CI: " + ("all combinations passed" if ok else "FAILED (see the combinations marked FAIL above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
