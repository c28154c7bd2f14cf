"""Read ComfyUI's quantized safetensors files as plain tensors (dequantized on load).

ComfyUI stores quantized layers as the low-precision weight plus scale tensors beside it
(ComfyUI 0.20.1 ``QUANTIZATION.md``, ``comfy/quant_ops.py`` QUANT_ALGOS, ``comfy/utils.py`` convert_old_quants):

- ``float8_e4m3fn`` / ``float8_e5m2`` (per-tensor scaled fp8): ``<layer>.weight`` in fp8, ``<layer>.weight_scale``
  a float32 scalar, optionally ``<layer>.input_scale`` (activation scale, not needed to dequantize);
  ``weight = fp8.float() * weight_scale`` (fp8 may sit in a uint8 container). Lightricks' ``-fp8`` checkpoints and
  ``gemma_3_12B_it_fp8_scaled`` use it.
- ``nvfp4``: ``<layer>.weight`` uint8, two E2M1 values per byte (the even element in the high nibble),
  ``<layer>.weight_scale`` fp8 e4m3 scales per 16 elements of a row in cuBLAS' swizzled block layout (rows padded
  to 128, block columns to 4), ``<layer>.weight_scale_2`` the float32 per-tensor scale;
  ``weight = e2m1 * block_scale * weight_scale_2`` (``gemma_3_12B_it_fp4_mixed``).
- The file says which layers are quantized in its ``_quantization_metadata`` metadata (JSON ``{"layers":
  {layer: {"format": ...}}}``); older files carry a ``scaled_fp8`` marker tensor and ``.scale_weight`` /
  ``.scale_input`` names instead. A file with neither but fp8 weights and ``.weight_scale`` tensors is read the
  same way (per-tensor scaled fp8).

Pure torch + safetensors; no ComfyUI import.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
#: E2M1 (fp4) code -> value: sign bit 3, exponent bits 2..1, mantissa bit 0.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
NVFP4_BLOCK = 16
SCALE_SUFFIXES = (".weight_scale", ".weight_scale_2", ".input_scale", ".pre_quant_scale", ".scale_weight",
                  ".scale_input", ".comfy_quant")
MARKER = "scaled_fp8"


class QuantFormatError(ValueError):
    """A quantized layer in a format this reader cannot turn back into plain weights."""


@dataclass
class QuantizedSafetensors:
    """A safetensors file whose quantized layers read back as plain tensors.

    ``keys()`` lists the logical tensors (scale tensors and markers hidden); ``get(key)`` returns a plain tensor
    (``dequantize=True``) or the stored one; ``format_of(key)`` names the layer's format (None: not quantized).
    """

    path: str
    _handle: object = field(default=None, repr=False)
    formats: dict[str, str] = field(default_factory=dict)  # layer -> "float8_e4m3fn" | "nvfp4" | ...
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self._handle is None:
            self._handle = safe_open(self.path, framework="pt")
        self.metadata = self._handle.metadata() or {}
        names = set(self._handle.keys())
        self._names = names
        self._old_names = MARKER in names or any(n.endswith(".scale_weight") for n in names)
        quant_meta = self.metadata.get("_quantization_metadata")
        if quant_meta:
            layers = json.loads(quant_meta).get("layers", {})
            self.formats = {layer: str(conf.get("format", "")) for layer, conf in layers.items()}
        else:
            scale = ".scale_weight" if self._old_names else ".weight_scale"
            for n in names:
                if n.endswith(scale):
                    layer = n[: -len(scale)]
                    if layer + ".weight" in names:
                        dtype = self._handle.get_slice(layer + ".weight").get_dtype()
                        self.formats[layer] = "float8_e5m2" if dtype == "F8_E5M2" else "float8_e4m3fn"

    def close(self) -> None:
        if not isinstance(self._handle, MemoryHandle):  # a preloaded file stays readable (keep_loaded)
            self._handle = None

    def __enter__(self) -> "QuantizedSafetensors":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def quantized(self) -> bool:
        return bool(self.formats)

    def keys(self) -> list[str]:
        return [n for n in self._names if n != MARKER and not n.endswith(SCALE_SUFFIXES)]

    def format_of(self, key: str) -> str | None:
        return self.formats.get(key[: -len(".weight")]) if key.endswith(".weight") else None

    def raw(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        """The logical (dequantized) shape of `key`."""
        shape = tuple(self._handle.get_slice(key).get_shape())
        if self.format_of(key) == "nvfp4":
            shape = (*shape[:-1], shape[-1] * 2)
        return shape

    def _scale(self, layer: str, new: str, old: str) -> torch.Tensor | None:
        name = layer + (old if self._old_names else new)
        if name in self._names:
            return self._handle.get_tensor(name)
        return self._handle.get_tensor(layer + new) if layer + new in self._names else None

    def weight_scale(self, key: str) -> torch.Tensor | None:
        """The per-tensor scale of an fp8 weight (None for a plain tensor)."""
        if self.format_of(key) not in ("float8_e4m3fn", "float8_e5m2"):
            return None
        return self._scale(key[: -len(".weight")], ".weight_scale", ".scale_weight")

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """`key` dequantized (plain float) and cast to `dtype` (None: float32 for quantized, stored dtype else)."""
        value = self._handle.get_tensor(key)
        fmt = self.format_of(key)
        if fmt is None:
            if value.dtype in FP8_DTYPES:  # an fp8 tensor without a scale: a plain cast
                value = value.float()
            return value.to(device=device, dtype=dtype or value.dtype)
        layer = key[: -len(".weight")]
        value = value.to(device)
        if fmt in ("float8_e4m3fn", "float8_e5m2"):
            if value.dtype == torch.uint8:  # fp8 stored in a uint8 container
                value = value.view(torch.float8_e4m3fn if fmt == "float8_e4m3fn" else torch.float8_e5m2)
            scale = self._scale(layer, ".weight_scale", ".scale_weight")
            out = value.float() * (scale.to(device).float() if scale is not None else 1.0)
        elif fmt == "nvfp4":
            block = self._scale(layer, ".weight_scale", ".scale_weight")
            tensor_scale = self._scale(layer, ".weight_scale_2", ".weight_scale_2")
            if block is None or tensor_scale is None:
                raise QuantFormatError(f"{self.path}: nvfp4 layer {layer} lacks weight_scale / weight_scale_2")
            if block.dtype == torch.uint8:
                block = block.view(torch.float8_e4m3fn)
            out = dequantize_nvfp4(value, block.to(device), tensor_scale.to(device))
        else:
            raise QuantFormatError(f"{self.path}: layer {layer} is stored as {fmt!r}, which this loader cannot "
                                   "read (it reads float8_e4m3fn, float8_e5m2 and nvfp4)")
        return out.to(dtype or torch.float32)


class _Slice:
    def __init__(self, t: torch.Tensor):
        self.t = t

    def get_shape(self):
        return list(self.t.shape)

    def get_dtype(self) -> str:
        return {torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}.get(self.t.dtype, str(self.t.dtype))


class MemoryHandle:
    """A whole safetensors file in RAM behind safe_open's interface (what keep_loaded keeps between runs)."""

    def __init__(self, path: str):
        with safe_open(path, framework="pt") as f:
            self._meta = f.metadata() or {}
            self._tensors = {k: f.get_tensor(k) for k in f.keys()}
        self.nbytes = sum(t.numel() * t.element_size() for t in self._tensors.values())

    def keys(self):
        return list(self._tensors)

    def metadata(self):
        return self._meta

    def get_tensor(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def get_slice(self, key: str) -> _Slice:
        return _Slice(self._tensors[key])


def preload(path: str) -> QuantizedSafetensors:
    """`path` read into RAM once; reading it again costs no disk access."""
    return QuantizedSafetensors(path, _handle=MemoryHandle(path))


def unswizzle_block_scales(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """cuBLAS' block-scaling-factor layout back to a [rows, cols] grid (the inverse of ComfyUI's
    ``comfy.float.to_blocked``: 128x4 tiles, each stored as 32 rows x 16 = 4 groups of 32 rows by 4 columns)."""
    row_tiles, col_tiles = -(-rows // 128), -(-cols // 4)
    t = blocked.reshape(row_tiles * col_tiles, 32, 4, 4)  # per tile: [r32, group(4), c4]
    t = t.transpose(1, 2)  # [tile, group, r32, c4] = rows group*32 + r32 of the 128-row tile
    t = t.reshape(row_tiles, col_tiles, 128, 4).permute(0, 2, 1, 3).reshape(row_tiles * 128, col_tiles * 4)
    return t[:rows, :cols]


def dequantize_nvfp4(packed: torch.Tensor, block_scales: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """[rows, cols/2] uint8 (even element in the high nibble) -> [rows, cols] float32."""
    rows, half = packed.shape
    cols = half * 2
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(rows, cols).long()
    lut = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32, device=packed.device)
    values = lut[codes]
    scales = unswizzle_block_scales(block_scales, rows, cols // NVFP4_BLOCK).float()
    values = values.reshape(rows, cols // NVFP4_BLOCK, NVFP4_BLOCK) * scales[..., None]
    return values.reshape(rows, cols) * tensor_scale.float()


def quantize_fp8_per_tensor(weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, float32 scale) with weight ~= fp8 * scale (per-tensor absolute-maximum scaling, as ComfyUI)."""
    w = weight.float()
    amax = w.abs().max().clamp(min=1e-12)
    scale = (amax / torch.finfo(dtype).max).float()
    return (w / scale).clamp(torch.finfo(dtype).min, torch.finfo(dtype).max).to(dtype), scale.reshape(())
