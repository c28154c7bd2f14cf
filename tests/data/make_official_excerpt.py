"""Write tests/data/official_outpaint_workflow.excerpt.json from Lightricks' official outpaint workflow.

Run by hand when the reference changes (needs a checkout of Lightricks/ComfyUI-LTXVideo):

    python tests/data/make_official_excerpt.py /path/to/ComfyUI-LTXVideo [commit]

The excerpt keeps, for every node, its id, type, mode (4 = bypassed), title, widget values, the line of its
`"id"` in the original file, and the links (from node/output -> to node/input). Notes, positions, sizes and
colours are left out. Only facts (numbers and names) are copied, with the source named in the file.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

PATH = "example_workflows/2.3/LTX-2.3_ICLoRA_Outpaint_Two_Stage_Distilled.json"
#: constants of the workflow's own nodes that the recipe uses: (file, regex with one group = the value)
CONSTANTS = {
    "fill_rgb": ("vanish_nodes.py", r"^_BG_COLOR_RGB = (\(.*\))$"),
    "blend_mask_long_side": ("pyramid_blending.py", r"^_MASK_LOW_RES_LONG_SIDE = (\d+)$"),
    "blend_max_level": ("pyramid_blending.py", r"^\s+max_level=(\d+),$"),
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_outpaint_workflow.excerpt.json")


def main(repo: str, commit: str = "HEAD") -> None:
    git = ["git", "-C", repo] if os.path.isdir(os.path.join(repo, ".git")) else ["git", f"--git-dir={repo}"]
    text = subprocess.run([*git, "show", f"{commit}:{PATH}"], check=True, capture_output=True, text=True).stdout
    sha = subprocess.run([*git, "rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
    blob = subprocess.run([*git, "rev-parse", f"{commit}:{PATH}"], check=True, capture_output=True,
                          text=True).stdout.strip()
    wf = json.loads(text)
    lines = text.splitlines()
    id_line = {}
    for i, line in enumerate(lines, 1):
        m = re.match(r'^\s{6}"id": (\d+),\s*$', line)
        if m and int(m.group(1)) not in id_line:
            id_line[int(m.group(1))] = i
    nodes = []
    for n in wf["nodes"]:
        if n["type"] in ("MarkdownNote", "Note"):
            continue
        inputs = {i["name"]: i.get("link") for i in n.get("inputs", []) if i.get("link") is not None}
        nodes.append({"id": n["id"], "type": n["type"], "mode": n.get("mode", 0), "title": n.get("title"),
                      "line": id_line.get(n["id"]), "widgets_values": n.get("widgets_values"),
                      "input_links": inputs})
    constants = {}
    for name, (file, pattern) in CONSTANTS.items():
        src = subprocess.run([*git, "show", f"{commit}:{file}"], check=True, capture_output=True, text=True).stdout
        hits = [(i, m.group(1)) for i, line in enumerate(src.splitlines(), 1) if (m := re.match(pattern, line))]
        line, value = hits[-1]  # the last one: for max_level, the call in the node's execute
        constants[name] = {"file": file, "line": line, "value": json.loads(value.replace("(", "[").replace(")", "]"))}
    links = [{"id": l[0], "from": [l[1], l[2]], "to": [l[3], l[4]], "type": l[5]} for l in wf["links"]]
    excerpt = {
        "source": {"repository": "https://github.com/Lightricks/ComfyUI-LTXVideo", "commit": sha, "path": PATH,
                   "blob": blob, "license": "LTX-2 Community License Agreement (the repository's LICENSE); "
                   "this excerpt keeps only node ids, types, widget values and links, for our tests"},
        "constants": constants,
        "nodes": sorted(nodes, key=lambda n: n["id"]),
        "links": links,
    }
    with open(OUT, "w") as f:
        json.dump(excerpt, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(nodes)} nodes, {len(links)} links")


if __name__ == "__main__":
    main(*sys.argv[1:])
