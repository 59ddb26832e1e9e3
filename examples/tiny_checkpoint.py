"""Write a small randomly initialised EDM network (DDPM++ layout, 32x32 RGB) to try the pipeline without a
real checkpoint. Its ICR means nothing; use your own training run's checkpoint for real measurements.

    python examples/tiny_checkpoint.py tiny.safetensors
"""

import sys

import torch
from safetensors.torch import save_file

from icrcli.models.archs.edm import build_edm

torch.manual_seed(0)
net = build_edm("edm", "SongUNet", img_resolution=32, img_channels=3, model_channels=32, channel_mult=[1, 2, 2],
                num_blocks=2, attn_resolutions=[16])
out = sys.argv[1] if len(sys.argv) > 1 else "tiny.safetensors"
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out)
print(out)
