"""Block offloading: blocks stay in CPU RAM and visit the device one at a time, around their own forward.

This machine has no GPU, so the "device" in the hook test is PyTorch's meta device: a parameter that the hooks
moved has device "meta" during its block's forward, and the test checks where every block's weights are at every
block's forward and after. The end-to-end test runs the whole engine with offload="blocks" on the CPU (the hooks
run, every move is CPU to CPU) and must give the same frames as without offloading. Real VRAM figures come from
tests/bench_local_gpu.py on a GPU.
"""
from __future__ import annotations

import pytest
import torch

from test_local_backend import _config, _run
from ltx_outpaint.local.ltxcore.offload import block_bytes, stream_blocks


@pytest.fixture(scope="module")
def source_clip():
    from clips import clip
    from ltx_outpaint.media.decode import DecodeOptions, decode_video

    return decode_video(clip("local_src.mp4", width=64, height=96, frames=12, fps=8), DecodeOptions())


class Block(torch.nn.Module):
    def __init__(self, i, seen):
        super().__init__()
        self.i, self.seen = i, seen
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        self.seen.append((self.i, self.lin.weight.device.type, self.scale.device.type))
        return self.lin(x) * self.scale


class Model(torch.nn.Module):
    def __init__(self, seen):
        super().__init__()
        self.inp = torch.nn.Linear(4, 4)
        self.blocks = torch.nn.ModuleList([Block(i, seen) for i in range(3)])
        self.out = torch.nn.Linear(4, 4)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = b(x)
        return self.out(x)


def test_hooks_move_each_block_to_the_device_for_its_forward_only():
    seen = []
    model = Model(seen)
    originals = [b.lin.weight.detach().clone() for b in model.blocks]
    streamer = stream_blocks(model, model.blocks, "meta", record=True)
    assert model.inp.weight.is_meta and model.out.weight.is_meta  # the rest lives on the device
    assert all(b.lin.weight.device.type == "cpu" for b in model.blocks)  # the blocks in RAM
    out = model(torch.zeros(2, 4, device="meta"))
    assert out.is_meta
    assert seen == [(0, "meta", "meta"), (1, "meta", "meta"), (2, "meta", "meta")]
    assert streamer.events == [("load", 0), ("unload", 0), ("load", 1), ("unload", 1), ("load", 2), ("unload", 2)]
    assert all(torch.equal(b.lin.weight, w) for b, w in zip(model.blocks, originals))  # back in RAM, unchanged
    assert block_bytes(model.blocks) == (16 + 4) * 4
    streamer.remove()
    seen.clear()
    model.inp.to_empty(device="cpu"), model.out.to_empty(device="cpu")
    model(torch.zeros(1, 4))
    assert [s[1] for s in seen] == ["cpu"] * 3  # hooks removed: nothing moves any more


def test_the_engine_with_block_offloading_gives_the_same_frames(tiny_models, source_clip):
    plain = _run(tiny_models, source_clip, seed=11)
    blocks = _run(tiny_models, source_clip, config=_config(tiny_models, offload="blocks"), seed=11)
    assert torch.equal(plain.frames, blocks.frames)
    assert any("offload: blocks, text encoder blocks" in n for n in blocks.notes)
    assert any("offload: none" in n for n in plain.notes)
