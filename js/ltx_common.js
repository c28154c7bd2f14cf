// Shared helpers for the pack's extensions (no extension of its own): the constants served by the pack
// (GET /ltx_outpaint/constants, one source of truth with the Python side), canvas layout and fal cost.
import { api } from "../../scripts/api.js";
import { layoutRect } from "./ltx_geometry.js";

let constantsPromise = null;

export function getConstants() {
  constantsPromise ??= api.fetchApi("/ltx_outpaint/constants").then((r) => r.json());
  return constantsPromise;
}

export const widgetValue = (node, name) => node?.widgets?.find((w) => w.name === name)?.value;

/** Canvas size [w, h] of an Outpaint Canvas node (preset or custom), before any backend snapping. */
export function canvasSize(node, c) {
  const res = widgetValue(node, "resolution");
  if (res === "custom") return [Number(widgetValue(node, "width")), Number(widgetValue(node, "height"))];
  return c.presets[res] ?? c.presets.landscape_16_9;
}

/** canvas.layout_canvas for a node's widgets (js/ltx_geometry.js: the same rounding as the run). */
export function layout(node, c, srcW, srcH, snap = 1) {
  const [W, H] = canvasSize(node, c);
  const anchor = c.anchors[widgetValue(node, "placement")] ?? [0.5, 0.5];
  return layoutRect(W, H, srcW, srcH, Number(widgetValue(node, "source_scale") ?? 1), anchor,
                    Number(widgetValue(node, "offset_x") ?? 0), Number(widgetValue(node, "offset_y") ?? 0), snap);
}

/** fal's price: ceil(w*h*frames / 1e6) megapixels x $/MP (cost.py). */
export function falCost(c, w, h, frames) {
  const units = Math.ceil((w * h * frames) / c.cost.pixels_per_unit);
  return { units, usd: units * c.cost.usd_per_megapixel };
}

/** The node feeding input `name` of `node`, or null. */
export function inputNode(node, name) {
  const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  return slot >= 0 ? node.getInputNode(slot) : null;
}
