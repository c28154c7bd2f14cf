"""Quality report for an outpaint result: how well the source was kept, whether the border shows, whether
fill colour leaked, whether the generated area flickers. Computed on every run (node text + JSON sidecar).

Inputs: `output` and `placed_source` [F,H,W,3] in 0..1 on the same canvas (`placed_source` = the source
frames where the output should keep them; what it holds elsewhere is never read), `generate_mask` [H,W]
(> 0.5 = generated area, else kept area). Colour values are on the 0..1 scale; :meth:`QualityReport.lines`
shows them in 8-bit levels (x255). All statistics pool every frame and colour channel (channel values are
averaged per pixel before absolute values are pooled, as written below). Frames are read in chunks.

Definitions (b = `band_px`, p = a kept pixel whose neighbour one step outward, p+d, is generated, for each
of the four axis directions d; such a p is a *border pair* when the b pixels p+d .. p+b*d are all generated,
the 2b pixels p .. p-(2b-1)*d are all kept and all lie on the canvas; one pair per frame):

- ``kept_psnr_db``: 10*log10(1 / MSE) of output vs placed source over the kept area (peak 1.0); inf when
  identical; None without a kept area.
- ``seam_color_step`` = ``seam_color_raw`` - ``seam_color_baseline``. raw: mean over border pairs of
  |mean(output over the outer band p+d..p+b*d) - mean(output over the inner band p..p-(b-1)*d)|; baseline:
  the same statistic on the placed source one band deeper, |mean(source inner band) - mean(source over
  p-b*d..p-(2b-1)*d)|: how much the source itself changes between two adjacent bands. A result that
  continues the picture scores ~0; a hard colour edge at the border scores its height. None without pairs.
- ``seam_gradient_step``: (median |output[p+d] - output[p]| + e) / (median of the one-step differences
  |output[q+d] - output[q]| with q, q+d both inside one band, i.e. the b-1 steps inside each band) + e),
  e = 0.5/255. 1 = the step across the border is like the steps next to it; large = a visible edge.
- ``green_leak_fraction``: fraction of generated-area pixels whose RGB (0..1) lies within Euclidean
  distance ``fill_tolerance`` (default 0.1, ~25 levels) of `fill_rgb`. None without a generated area.
- ``temporal_flicker_generated`` / ``temporal_flicker_source``: mean |frame t - frame t-1| over the
  generated area of the output / over the kept area of the placed source. ``temporal_flicker`` = their
  ratio (1 = the generated area changes as much as the source; 0 = frozen; inf when only the source is
  static; 1 when both are). Each is None with one frame or without its area(s).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

FILL_TOLERANCE = 0.1
_EPS = 0.5 / 255
_CHUNK = 8


@dataclass
class QualityReport:
    frames: int
    width: int
    height: int
    generated_fraction: float  # of the canvas area
    band_px: int
    kept_psnr_db: float | None
    seam_pairs: int  # border pairs measured (summed over frames)
    seam_color_step: float | None
    seam_color_raw: float | None
    seam_color_baseline: float | None
    seam_gradient_step: float | None
    seam_gradient_across: float | None  # median one-step difference across the border
    seam_gradient_nearby: float | None  # median one-step difference inside the bands
    green_leak_fraction: float | None
    fill_rgb: tuple[int, int, int]
    fill_tolerance: float
    temporal_flicker: float | None
    temporal_flicker_generated: float | None
    temporal_flicker_source: float | None

    def to_dict(self) -> dict:
        """JSON-safe: infinities become the string "inf", tuples become lists."""
        def safe(v):
            if isinstance(v, float) and math.isinf(v):
                return "inf" if v > 0 else "-inf"
            if isinstance(v, tuple):
                return list(v)
            return v
        return {k: safe(v) for k, v in asdict(self).items()}

    def lines(self) -> list[str]:
        """Human-readable summary, one metric per line."""
        def lv(v: float) -> str:
            return f"{v * 255:.2f}"

        out = [f"quality ({self.frames} frames, {self.width}x{self.height}, "
               f"{self.generated_fraction:.0%} generated)"]
        if self.kept_psnr_db is None:
            out.append("kept-region PSNR: n/a (nothing kept)")
        elif math.isinf(self.kept_psnr_db):
            out.append("kept-region PSNR: inf dB (identical to the source)")
        else:
            out.append(f"kept-region PSNR: {self.kept_psnr_db:.2f} dB vs the placed source")
        if self.seam_color_step is None:
            out.append(f"seam: n/a (no border with {self.band_px}-px bands on both sides)")
        else:
            out.append(f"seam colour step: {lv(self.seam_color_step)} levels (across the border "
                       f"{lv(self.seam_color_raw)}, source baseline {lv(self.seam_color_baseline)}; "
                       f"{self.band_px}-px bands; 0 = seamless)")
            out.append(f"seam gradient step: {self.seam_gradient_step:.2f}x the nearby gradient "
                       f"(1 = no visible edge)")
        if self.green_leak_fraction is None:
            out.append("fill-colour leak: n/a (nothing generated)")
        else:
            hex_fill = "#" + "".join(f"{c:02X}" for c in self.fill_rgb)
            out.append(f"fill-colour leak: {self.green_leak_fraction:.2%} of the generated area "
                       f"near {hex_fill}")
        if self.temporal_flicker is None:
            out.append("temporal flicker: n/a" + (" (one frame)" if self.frames < 2 else ""))
        else:
            out.append(f"temporal flicker: {self.temporal_flicker:.2f}x the source's frame-to-frame change "
                       f"(generated {lv(self.temporal_flicker_generated)}, "
                       f"source {lv(self.temporal_flicker_source)} levels/frame)")
        return out


def default_band(height: int, width: int) -> int:
    """Seam band width when none is given: 1/128 of the short side, at least 2 px."""
    return max(2, min(height, width) // 128)


# The four border directions: each is measured on a view of the mask in which the generated side lies at
# +x; `_to_canvas` maps view coordinates back, so the frames are read in place (no flipped copies).
def _mask_views(m: torch.Tensor) -> list[torch.Tensor]:
    return [m, m.flip(1), m.t(), m.t().flip(1)]


def _to_canvas(view: int, r: torch.Tensor, c: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    if view == 0:
        return r, c
    if view == 1:
        return r, w - 1 - c
    if view == 2:
        return c, r
    return h - 1 - c, r


def _border_pairs(kept: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of border pairs p for generated at +x in `kept` [H,W] bool (see module doc)."""
    h, w = kept.shape
    if w < 3 * b:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    ck = torch.cat([torch.zeros(h, 1, dtype=torch.long), kept.long().cumsum(1)], dim=1)
    xs = torch.arange(2 * b - 1, w - b)
    inner = ck[:, xs + 1] - ck[:, xs - 2 * b + 1]  # kept count over p-(2b-1) .. p
    outer = ck[:, xs + b + 1] - ck[:, xs + 1]  # kept count over p+1 .. p+b
    rows, idx = torch.nonzero((inner == 2 * b) & (outer == 0), as_tuple=True)
    return rows, xs[idx]


@dataclass
class _Acc:
    psnr_se: float = 0.0
    psnr_n: int = 0
    raw: float = 0.0
    base: float = 0.0
    pairs: int = 0
    leak: int = 0
    gen_px: int = 0
    flick_gen: float = 0.0
    flick_src: float = 0.0
    flick_steps: int = 0


def quality_report(output: torch.Tensor, placed_source: torch.Tensor, generate_mask: torch.Tensor,
                   fill_rgb: tuple[int, int, int] = (102, 255, 0), band_px: int | None = None,
                   fill_tolerance: float = FILL_TOLERANCE) -> QualityReport:
    """Measure `output` against `placed_source` (see the module docstring for every definition)."""
    if output.ndim != 4 or output.shape[-1] != 3:
        raise ValueError(f"output: expected [F,H,W,3], got {tuple(output.shape)}")
    if placed_source.shape[1:] != output.shape[1:]:
        raise ValueError(f"placed_source: size {tuple(placed_source.shape)} differs from output "
                         f"{tuple(output.shape)}")
    if tuple(generate_mask.shape) != tuple(output.shape[1:3]):
        raise ValueError(f"generate_mask: expected [H,W] = {tuple(output.shape[1:3])}, "
                         f"got {tuple(generate_mask.shape)}")
    f = min(output.shape[0], placed_source.shape[0])
    _, h, w, _ = output.shape
    b = default_band(h, w) if band_px is None else int(band_px)
    if b < 2:
        raise ValueError(f"band_px: must be >= 2 (or None for automatic), got {band_px}")

    gen = (generate_mask.detach().float().cpu() > 0.5)
    kept = ~gen
    n_gen, n_kept = int(gen.sum()), int(kept.sum())
    genf, keptf = gen.float(), kept.float()
    pairs = [_border_pairs(m, b) for m in _mask_views(kept)]
    fill = torch.tensor(fill_rgb, dtype=torch.float32) / 255
    acc = _Acc()
    across: list[torch.Tensor] = []
    nearby: list[torch.Tensor] = []
    prev_out = prev_src = None
    offsets = torch.arange(-2 * b + 1, b + 1)

    for s in range(0, f, _CHUNK):
        out = output[s:s + _CHUNK].detach().cpu().float()
        src = placed_source[s:s + _CHUNK].detach().cpu().float()
        n = out.shape[0]
        if n_kept:
            se = (out - src).square_().sum(-1)  # [n,H,W]
            acc.psnr_se += float(torch.sum(se * keptf, dtype=torch.float64))
            acc.psnr_n += n * n_kept * 3
            del se
        if n_gen:
            near = (out - fill).norm(dim=-1) <= fill_tolerance
            acc.leak += int((near & gen).sum())
            acc.gen_px += n * n_gen
            del near
        if f > 1:
            o = out if prev_out is None else torch.cat([prev_out, out])
            r = src if prev_src is None else torch.cat([prev_src, src])
            if n_gen:
                step = (o[1:] - o[:-1]).abs_().sum(-1)
                acc.flick_gen += float(torch.sum(step * genf, dtype=torch.float64)) / (n_gen * 3)
            if n_kept:
                step = (r[1:] - r[:-1]).abs_().sum(-1)
                acc.flick_src += float(torch.sum(step * keptf, dtype=torch.float64)) / (n_kept * 3)
            acc.flick_steps += o.shape[0] - 1
            prev_out, prev_src = out[-1:], src[-1:]
            del o, r
        for view, (rows, cols) in enumerate(pairs):
            if rows.numel() == 0:
                continue
            cc = cols[:, None] + offsets[None]  # [P, 3b]: p-(2b-1) .. p+b along the view's x
            yy, xx = _to_canvas(view, rows[:, None].expand_as(cc), cc, h, w)
            vo = out[:, yy, xx]  # [n, P, 3b, 3]
            vs = src[:, yy, xx]
            deep, inner, outer = vs[:, :, :b], vo[:, :, b:2 * b], vo[:, :, 2 * b:]
            raw = (outer.mean(2) - inner.mean(2)).abs().mean(-1)
            base = (vs[:, :, b:2 * b].mean(2) - deep.mean(2)).abs().mean(-1)
            acc.raw += float(raw.double().sum())
            acc.base += float(base.double().sum())
            acc.pairs += raw.numel()
            steps = (vo[:, :, b + 1:] - vo[:, :, b:-1]).abs().mean(-1)  # [n, P, 2b-1]: p-b+1 .. p+b
            across.append(steps[:, :, b - 1].reshape(-1))
            nearby.append(torch.cat([steps[:, :, :b - 1], steps[:, :, b:]], dim=2).reshape(-1))

    psnr = None
    if acc.psnr_n:
        mse = acc.psnr_se / acc.psnr_n
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    color = raw_m = base_m = grad = g_across = g_near = None
    if acc.pairs:
        raw_m, base_m = acc.raw / acc.pairs, acc.base / acc.pairs
        color = raw_m - base_m
        g_across = float(torch.cat(across).median())
        g_near = float(torch.cat(nearby).median())
        grad = (g_across + _EPS) / (g_near + _EPS)
    flicker = fg = fs = None
    if acc.flick_steps:
        fg = acc.flick_gen / acc.flick_steps if n_gen else None
        fs = acc.flick_src / acc.flick_steps if n_kept else None
        if fg is not None and fs is not None:
            flicker = fg / fs if fs > 0 else (1.0 if fg == 0 else math.inf)
    return QualityReport(
        frames=f, width=w, height=h, generated_fraction=n_gen / (h * w), band_px=b, kept_psnr_db=psnr,
        seam_pairs=acc.pairs, seam_color_step=color, seam_color_raw=raw_m, seam_color_baseline=base_m,
        seam_gradient_step=grad, seam_gradient_across=g_across, seam_gradient_nearby=g_near,
        green_leak_fraction=(acc.leak / acc.gen_px) if acc.gen_px else None, fill_rgb=tuple(fill_rgb),
        fill_tolerance=fill_tolerance, temporal_flicker=flicker, temporal_flicker_generated=fg,
        temporal_flicker_source=fs)


#: at most this many consecutive frames (from the middle of the clip) are measured on a run's result
WINDOW_FRAMES = 32


def frame_window(frames: int, limit: int = WINDOW_FRAMES) -> slice:
    """The consecutive frames a run's quality report measures: all of them, or `limit` from the middle."""
    if frames <= limit:
        return slice(0, frames)
    start = (frames - limit) // 2
    return slice(start, start + limit)
