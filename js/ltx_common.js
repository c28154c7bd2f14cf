// Shared helpers for the pack's extensions (no extension of its own): the constants served by the pack
// (GET /ltx_outpaint/constants, one source of truth with the Python side), canvas layout and fal cost.
import { api } from "../../scripts/api.js";

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

const snapSide = (v, m) => Math.max(m, Math.round(v / m) * m);

/** Same rule as canvas.layout_canvas: largest fit x source_scale, anchored, offsets clamped. */
export function layout(node, c, srcW, srcH, snap = 1) {
  let [W, H] = canvasSize(node, c);
  W = snapSide(W, snap);
  H = snapSide(H, snap);
  const scale = Number(widgetValue(node, "source_scale") ?? 1);
  const fit = Math.min(W / srcW, H / srcH) * scale;
  const w = Math.max(1, Math.min(W, Math.round(srcW * fit)));
  const h = Math.max(1, Math.min(H, Math.round(srcH * fit)));
  const [fx, fy] = c.anchors[widgetValue(node, "placement")] ?? [0.5, 0.5];
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const x = clamp(Math.round((W - w) * fx) + Number(widgetValue(node, "offset_x") ?? 0), W - w);
  const y = clamp(Math.round((H - h) * fy) + Number(widgetValue(node, "offset_y") ?? 0), H - h);
  return { W, H, x, y, w, h };
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
