"""A tiny distributed PyTorch program for a PyTorchJob: gloo on the CPU, no downloads.

Every replica joins the process group from the environment the Training Operator sets
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK), checks the group with an all-reduce of
rank + 1 (every rank prints ``allreduce: rank=R world=W sum=S``, S = W(W+1)/2), then trains
y = 3x + 1 with data-parallel SGD: each rank a shard of the data, gradients averaged with
an all-reduce each step. Rank 0 prints the loss per epoch as ``loss=<value>`` (Katib's
StdOut collector reads it). ``--lr`` and ``--epochs`` are the hyperparameters.
"""

import argparse

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    check = torch.tensor([float(rank + 1)])
    dist.all_reduce(check)
    print(f"allreduce: rank={rank} world={world} sum={check.item():g}", flush=True)

    torch.manual_seed(rank)
    x = torch.rand(64, 1)
    y = 3 * x + 1
    model = torch.nn.Linear(1, 1)
    for p in model.parameters():  # the same start on every rank
        dist.broadcast(p.data, src=0)
    for epoch in range(args.epochs):
        for _ in range(20):
            model.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
            with torch.no_grad():
                for p in model.parameters():
                    p -= args.lr * p.grad
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch + 1}: loss={total.item() / world:.6f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
