"""Metrics a config can name in `metrics`. Each returns a 0-dim tensor on the device
(batch mean); no `.item()` here, so the training loop never waits for the GPU."""
import torch


def accuracy(output, target):
    return (output.argmax(dim=1) == target).float().mean()


def top_k_acc(output, target, k=3):
    top = torch.topk(output, k, dim=1).indices
    return (top == target.unsqueeze(1)).any(dim=1).float().mean()
