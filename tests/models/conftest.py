"""Model tests run on one torch thread: tiny convolutions gain nothing from threads, and two threads on a
shared 2-core machine spin-wait (30 Adam steps: 0.5 s on one thread, 25 s on two under load)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
