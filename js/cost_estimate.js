// Live fal cost estimate on the outpaint node and the fal backend node: canvas size x num_frames with
// fal's price formula (constants from the pack, the same as cost.py). Updates as widgets change.
import { app } from "../../scripts/app.js";
import { canvasSize, falCost, getConstants, inputNode, widgetValue } from "./ltx_common.js";

function outpaintNodesOf(falNode) {
  const out = [];
  for (const linkId of falNode.outputs?.[0]?.links ?? []) {
    const link = app.graph.links instanceof Map ? app.graph.links.get(linkId) : app.graph.links[linkId];
    const target = link && app.graph.getNodeById(link.target_id);
    if (target?.comfyClass === "LTXOutpaint") out.push(target);
  }
  return out;
}

function estimate(outpaint, c) {
  const canvasNode = inputNode(outpaint, "canvas");
  if (!canvasNode || canvasNode.comfyClass !== "LTXOutpaintCanvas") return "fal estimate: connect an Outpaint Canvas";
  const [w, h] = canvasSize(canvasNode, c);
  const frames = Number(widgetValue(outpaint, "num_frames") ?? 0);
  const { units, usd } = falCost(c, w, h, frames);
  return `fal estimate: $${usd.toFixed(4)} (${w}x${h}x${frames} = ${units} MP)`;
}

app.registerExtension({
  name: "ltx_outpaint.cost_estimate",
  async nodeCreated(node) {
    if (!["LTXOutpaint", "LTXOutpaintFalBackend"].includes(node.comfyClass)) return;
    const el = document.createElement("div");
    el.className = "ltx-outpaint-cost";
    el.style.cssText = "font:11px monospace;padding:2px 4px;color:#ffd27f";
    node.addDOMWidget("ltx_cost_estimate", "ltx_cost", el, { serialize: false, getMinHeight: () => 18 });
    const c = await getConstants();
    let last = null;
    const update = () => {
      const targets = node.comfyClass === "LTXOutpaint" ? [node] : outpaintNodesOf(node);
      const text = targets.length ? targets.map((t) => estimate(t, c)).join(" | ") : "fal estimate: connect to an outpaint node";
      if (text !== last) el.textContent = last = text;
    };
    const onDraw = node.onDrawForeground;
    node.onDrawForeground = function () { onDraw?.apply(this, arguments); update(); };
    update();
  },
});
