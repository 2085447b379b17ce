"""Every VFM test runs on one thread (restored afterwards): the float64 comparisons and the
tiny towers gain nothing from two, and other tests may run beside them."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
