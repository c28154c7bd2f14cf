// Canvas geometry of the Outpaint Canvas node, the same rule and the same floating-point steps as the
// Python side (nodes/media/canvas.py layout_canvas / SnapRule): no imports, so tests can run it in node
// (tests/test_canvas_geometry_js.py compares every number with Python's on a grid). Not an extension.

/** The nearest integer, halves up (canvas.py round_half_up): Math.floor(v + 0.5). */
export const roundHalfUp = (v) => Math.floor(v + 0.5);

/** A canvas side snapped to a multiple of m (SnapRule.size). */
export const snapSide = (v, m) => Math.max(m, roundHalfUp(v / m) * m);

/** A frame count snapped to 8k+1 when the backend needs it (SnapRule.frames). */
export const snapFrames = (n, frames8k1) => (frames8k1 ? Math.max(9, 8 * roundHalfUp((n - 1) / 8) + 1) : n);

/**
 * Where a srcW x srcH source sits on a W x H canvas (canvas.layout_canvas): largest fit x scale, placed by the
 * anchor's fractions [fx, fy] of the free space, moved by the offsets and clamped to the canvas; the canvas
 * sides first snapped to a multiple of `snap`. Returns {W, H, x, y, w, h}.
 */
export function layoutRect(W, H, srcW, srcH, scale, [fx, fy], offsetX = 0, offsetY = 0, snap = 1) {
  if (!(srcW > 0 && srcH > 0)) throw new Error(`source size must be positive, got ${srcW}x${srcH}`);
  W = snapSide(W, snap);
  H = snapSide(H, snap);
  const fit = Math.min(W / srcW, H / srcH) * scale;
  const w = Math.max(1, Math.min(W, roundHalfUp(srcW * fit)));
  const h = Math.max(1, Math.min(H, roundHalfUp(srcH * fit)));
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const x = clamp(roundHalfUp((W - w) * fx) + offsetX, W - w);
  const y = clamp(roundHalfUp((H - h) * fy) + offsetY, H - h);
  return { W, H, x, y, w, h };
}
