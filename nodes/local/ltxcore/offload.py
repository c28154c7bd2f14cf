"""Block offloading: a model's repeated blocks live in CPU RAM and visit the GPU one at a time.

:func:`stream_blocks` puts everything of `model` except the blocks of `blocks` (a ``ModuleList``) on the device
and hooks each block: before its forward its weights are copied to the device (the next block's copy is
started on a side CUDA stream so transfer overlaps compute), after its forward the device copies are dropped
and the parameters point at the CPU tensors again. Peak VRAM is then the non-block weights, two blocks and the
activations. The CPU copies are pinned when possible, so copies run asynchronously.

The hooks work on any device pair; on a machine without CUDA the "device" may be another CPU device object
(tests check the hook order and where each block's weights are during its forward).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class BlockStreamer:
    """Handle for the hooks :func:`stream_blocks` installed (``remove()`` restores the model)."""

    blocks: torch.nn.ModuleList
    device: torch.device
    cpu_tensors: list[dict[str, torch.Tensor]] = field(default_factory=list)
    handles: list = field(default_factory=list)
    events: list[tuple[str, int]] = field(default_factory=list)  # ("load"|"unload", block index), for tests
    record: bool = False
    _stream: object = None
    _prefetched: dict = field(default_factory=dict)

    def _tensors(self, block: torch.nn.Module):
        for module in block.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    yield module, "_parameters", name, p
            for name, b in module._buffers.items():
                if b is not None:
                    yield module, "_buffers", name, b

    def _copy_to_device(self, i: int) -> list[torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return [t.to(self.device, non_blocking=non_blocking) for t in self.cpu_tensors[i].values()]

    def _prefetch(self, i: int) -> None:
        if i >= len(self.blocks) or i in self._prefetched or self._stream is None:
            return
        with torch.cuda.stream(self._stream):
            self._prefetched[i] = self._copy_to_device(i)

    def load(self, i: int) -> None:
        if i in self._prefetched:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(self._stream)
            copies = self._prefetched.pop(i)
            for t in copies:  # allocated on the side stream, used on the main one: keep it until that is done
                t.record_stream(main)
        else:
            copies = self._copy_to_device(i)
        for (module, kind, name, _), t in zip(self._tensors(self.blocks[i]), copies):
            getattr(module, kind)[name] = torch.nn.Parameter(t, requires_grad=False) if kind == "_parameters" else t
        if self.record:
            self.events.append(("load", i))
        self._prefetch(i + 1)

    def unload(self, i: int) -> None:
        cpu = self.cpu_tensors[i]
        for (module, kind, name, _), t in zip(list(self._tensors(self.blocks[i])), cpu.values()):
            getattr(module, kind)[name] = torch.nn.Parameter(t, requires_grad=False) if kind == "_parameters" else t
        if self.record:
            self.events.append(("unload", i))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self._prefetched.clear()


def _pin(t: torch.Tensor) -> torch.Tensor:
    try:
        return t.pin_memory()
    except RuntimeError:  # no CUDA driver, or not enough pinnable memory
        return t


def stream_blocks(model: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device | str,
                  record: bool = False) -> BlockStreamer:
    """Keep `blocks` in CPU RAM and stream them to `device` around their forwards; move the rest of `model` there."""
    device = torch.device(device)
    block_ids = {id(b) for b in blocks}
    for child in model.children():  # everything outside the blocks goes to the device
        if child is not blocks and id(child) not in block_ids:
            _move_except(child, blocks, device)
    for name, p in list(model._parameters.items()):
        if p is not None:
            model._parameters[name] = torch.nn.Parameter(p.to(device), requires_grad=False)
    for name, b in list(model._buffers.items()):
        if b is not None:
            model._buffers[name] = b.to(device)
    streamer = BlockStreamer(blocks, device, record=record)
    pin = device.type == "cuda"
    for block in blocks:
        tensors = {}
        for module, kind, name, t in streamer._tensors(block):
            cpu = t.detach().to("cpu")
            tensors[f"{id(module)}.{kind}.{name}"] = _pin(cpu) if pin else cpu
        streamer.cpu_tensors.append(tensors)
    for i, block in enumerate(blocks):
        streamer.unload(i)  # parameters point at the (pinned) CPU tensors
    streamer.events.clear()
    if device.type == "cuda":
        streamer._stream = torch.cuda.Stream(device)

    for i, block in enumerate(blocks):
        def pre(_module, _args, _kwargs=None, i=i):
            streamer.load(i)

        def post(_module, _args, _output, i=i):
            streamer.unload(i)

        streamer.handles.append(block.register_forward_pre_hook(pre))
        streamer.handles.append(block.register_forward_hook(post))
    log.info("block offloading: %d blocks stream to %s one at a time", len(blocks), device)
    return streamer


def _move_except(module: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device) -> None:
    """Move `module` to `device`, except `blocks` if it is inside it."""
    inner = any(m is blocks for m in module.modules())
    if not inner:
        module.to(device)
        return
    for child in module.children():
        if child is blocks:
            continue
        _move_except(child, blocks, device)
    for name, p in list(module._parameters.items()):
        if p is not None:
            module._parameters[name] = torch.nn.Parameter(p.to(device), requires_grad=False)
    for name, b in list(module._buffers.items()):
        if b is not None:
            module._buffers[name] = b.to(device)


def block_bytes(blocks: torch.nn.ModuleList) -> int:
    """Bytes of the largest block (what one GPU-resident block costs)."""
    return max((sum(t.numel() * t.element_size() for t in b.parameters()) for b in blocks), default=0)
