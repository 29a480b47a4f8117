"""Run under torchrun: the main rank is busy (as when it scores dev) for longer than the collective timeout
while the others wait for it; then one ordinary collective."""

import sys
import time

import torch
import torch.distributed as dist

from qslr.train.distributed import setup, teardown, wait_for_evaluation

env = setup("cpu")
if env.is_main:
    time.sleep(float(sys.argv[1]))
wait_for_evaluation(env)
total = torch.ones(1)
dist.all_reduce(total)
print(f"rank {env.rank} waited; all_reduce gave {int(total.item())}", flush=True)
teardown()
