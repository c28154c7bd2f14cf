// Live preview on the Outpaint Canvas node: the target canvas, the source rectangle (source_scale and
// placement), the area the model will generate, and the effective sizes per backend. Shows the loaded
// clip's first frame inside the source rectangle when the source is a Load Video node. width / height are
// hidden while a preset is selected (they only apply to "custom").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { getConstants, inputNode, layout, widgetValue } from "./ltx_common.js";

const GENERATE = "#1e5a34"; // area to generate
const SOURCE = "#4a90d9"; // source rectangle when no frame is available
const PREVIEW_W = 320;
const PREVIEW_H = 180;
const frames = new Map(); // file name -> {video, ready}

function sourceVideo(node) {
  const src = inputNode(node, "video");
  if (!src || !["LTXOutpaintLoadVideo", "LoadVideo"].includes(src.type)) return null;
  const name = widgetValue(src, "video") || widgetValue(src, "file");
  if (!name) return null;
  // Only files the combo lists are in the input folder: asking /view for others is a 404 on every redraw.
  const combo = src.widgets?.find((w) => w.name === "video" || w.name === "file");
  const listed = typeof combo?.options?.values === "function" ? combo.options.values() : combo?.options?.values;
  if (Array.isArray(listed) && !listed.includes(name)) return null;
  let entry = frames.get(name);
  if (!entry) {
    const clean = String(name).replace(/ \[(input|output|temp)\]$/, "");
    const cut = clean.lastIndexOf("/");
    const params = new URLSearchParams({ filename: clean.slice(cut + 1), type: "input", subfolder: cut > 0 ? clean.slice(0, cut) : "" });
    const video = document.createElement("video");
    video.muted = true;
    video.preload = "auto";
    entry = { video, ready: false };
    video.addEventListener("loadeddata", () => { video.currentTime = 0; });
    video.addEventListener("seeked", () => { entry.ready = true; app.graph.setDirtyCanvas(true); });
    video.src = api.apiURL(`/view?${params}`);
    frames.set(name, entry);
  }
  return entry;
}

const CUSTOM_ONLY = ["width", "height"];
const NO_HEIGHT = () => [0, -4]; // LiteGraph adds 4 px per widget row

// Hide width / height unless resolution is "custom", feature-detecting the frontend's widget API:
// LiteGraph with getLayoutWidgets (frontends >= 1.4x) skips hidden widgets in drawing and layout; with only
// isWidgetVisible (1.3x) hidden widgets are not drawn but keep their row, so they also get no height;
// without either, they are disabled. The node is resized to its widgets when that changes.
function showCustomSizeWidgets(node) {
  const custom = widgetValue(node, "resolution") === "custom";
  const canHide = typeof node.isWidgetVisible === "function";
  const layoutSkipsHidden = typeof node.getLayoutWidgets === "function";
  let changed = false;
  for (const name of CUSTOM_ONLY) {
    const w = node.widgets?.find((x) => x.name === name);
    if (!w) continue;
    const key = canHide ? "hidden" : "disabled";
    if (Boolean(w[key]) === !custom) continue;
    w[key] = !custom;
    if (canHide && !layoutSkipsHidden) {
      if (!custom) {
        w.ltxOwnComputeSize = Object.prototype.hasOwnProperty.call(w, "computeSize") ? w.computeSize : null;
        w.computeSize = NO_HEIGHT;
      } else if (w.computeSize === NO_HEIGHT) {
        if (w.ltxOwnComputeSize) w.computeSize = w.ltxOwnComputeSize;
        else delete w.computeSize;
      }
    }
    changed = true;
  }
  if (changed && canHide && typeof node.computeSize === "function") {
    node.setSize([node.size[0], node.computeSize([node.size[0], node.size[1]])[1]]);
    node.setDirtyCanvas?.(true, true);
  }
  return changed;
}

function draw(node, state) {
  const c = state.constants;
  if (!c) return;
  const entry = sourceVideo(node);
  const ready = entry?.ready && entry.video.videoWidth > 0;
  const srcW = ready ? entry.video.videoWidth : 9;
  const srcH = ready ? entry.video.videoHeight : 16;
  const lay = layout(node, c, srcW, srcH);
  const local = layout(node, c, srcW, srcH, c.snap.local.multiple);
  const sig = JSON.stringify([lay, local, ready]);
  if (sig === state.sig) return;
  state.sig = sig;
  const canvas = state.canvas;
  const k = Math.min(PREVIEW_W / lay.W, PREVIEW_H / lay.H);
  canvas.width = Math.max(1, Math.round(lay.W * k));
  canvas.height = Math.max(1, Math.round(lay.H * k));
  const g = canvas.getContext("2d");
  g.fillStyle = GENERATE;
  g.fillRect(0, 0, canvas.width, canvas.height);
  const r = [lay.x * k, lay.y * k, lay.w * k, lay.h * k];
  if (ready) g.drawImage(entry.video, ...r);
  else {
    g.fillStyle = SOURCE;
    g.fillRect(...r);
  }
  g.strokeStyle = "#fff";
  g.lineWidth = 1;
  g.strokeRect(r[0] + 0.5, r[1] + 0.5, Math.max(0, r[2] - 1), Math.max(0, r[3] - 1));
  canvas.dataset.layout = JSON.stringify({ ...lay, scale: k, frame: ready });
  state.label.textContent =
    `fal: ${lay.W}x${lay.H}, source ${lay.w}x${lay.h} at (${lay.x},${lay.y})` +
    ` | local: ${local.W}x${local.H} (x64, 8k+1 frames)` + (ready ? "" : " | source size not known yet: 9:16 shown");
}

app.registerExtension({
  name: "ltx_outpaint.canvas_preview",
  async nodeCreated(node) {
    if (node.comfyClass !== "LTXOutpaintCanvas") return;
    const root = document.createElement("div");
    root.className = "ltx-outpaint-canvas-preview";
    root.style.cssText = "display:flex;flex-direction:column;align-items:center;gap:2px;width:100%";
    const canvas = document.createElement("canvas");
    canvas.width = PREVIEW_W;
    canvas.height = PREVIEW_H;
    canvas.style.cssText = "max-width:100%;image-rendering:auto";
    const label = document.createElement("div");
    label.style.cssText = "font:10px monospace;opacity:0.8;text-align:center";
    root.append(canvas, label);
    const state = { canvas, label, sig: null, constants: null };
    node.addDOMWidget("ltx_canvas_preview", "ltx_preview", root, {
      serialize: false, getMinHeight: () => PREVIEW_H + 24, getMaxHeight: () => PREVIEW_H + 40,
    });
    state.constants = await getConstants();
    const redraw = () => { showCustomSizeWidgets(node); draw(node, state); };
    for (const w of node.widgets ?? []) {
      const cb = w.callback;
      w.callback = function () { const out = cb?.apply(this, arguments); redraw(); return out; };
    }
    const onDraw = node.onDrawForeground;
    node.onDrawForeground = function () { onDraw?.apply(this, arguments); redraw(); };
    const onConn = node.onConnectionsChange;
    node.onConnectionsChange = function () { onConn?.apply(this, arguments); state.sig = null; redraw(); };
    redraw();
  },
});
