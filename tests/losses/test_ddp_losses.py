"""Losses that do not depend on the number of processes: two gloo processes with half a batch each compute the
same DCL / POT loss (and the same gradient after DDP's averaging) as one process on the whole batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 64, 64, generator=g), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def _losses(model, x, y):
    model.train()
    out = model.compute_losses(x, y, generator=torch.Generator().manual_seed(1))
    loss = out["ot_dcl"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in out.items()}, grads


def _worker(rank, world, port, result_path):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from synerdetect import SynerDetect

    model = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 1, "loss.use_cmid": False})
    x, y = _batch()
    half = len(y) // world
    vals, grads = _losses(model, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
    for g in grads.values():  # what DDP does: average the gradients over the processes
        dist.all_reduce(g)
        g /= world
    if rank == 0:
        torch.save({"vals": vals, "grads": grads}, result_path)
    dist.destroy_process_group()


def test_two_processes_compute_the_one_process_loss(tmp_path):
    from synerdetect import SynerDetect

    torch.set_num_threads(1)
    ref_model = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 1, "loss.use_cmid": False})
    ref_vals, ref_grads = _losses(ref_model, *_batch())
    result = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(result)), nprocs=2, join=True)
    got = torch.load(result, weights_only=True)
    for k in ("dcl", "pot", "ot_dcl"):
        assert abs(got["vals"][k] - ref_vals[k]) < 1e-5, (k, got["vals"][k], ref_vals[k])
    assert got["grads"].keys() == ref_grads.keys()
    for n, g in ref_grads.items():
        torch.testing.assert_close(got["grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
