"""Launcher environments and the CPU model wrapper (no processes started; see
tests/engine/test_distributed.py for real 2-process runs)."""
import pytest
import torch
from torch import nn

from densekit.engine.dist import (
    CPUDistributedDataParallel,
    first_slurm_host,
    launcher_env,
    setup_distributed,
)


@pytest.mark.parametrize('nodes,host', [('gpu[03-05,07],cpu1', 'gpu03'), ('node1,node2', 'node1'),
                                        ('host', 'host'), ('a[1,3]', 'a1')])
def test_first_slurm_host(nodes, host):
    assert first_slurm_host(nodes) == host


def test_slurm_environment(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')            # no scontrol: the fallback parser
    for k in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node[7-8]')
    assert launcher_env('slurm') == (3, 1, 4)
    import os
    assert (os.environ['MASTER_ADDR'], os.environ['MASTER_PORT']) == ('node7', '29500')
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == \
        ('3', '4', '1')


def test_missing_launcher_environment(monkeypatch):
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID'):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match='torchrun'):
        launcher_env('pytorch')
    with pytest.raises(ValueError, match='srun'):
        launcher_env('slurm')


def test_single_process_config_is_untouched():
    from mmengine.config import Config
    cfg = Config(dict(launcher='none', model=dict(type='X')))
    setup_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg


def test_cpu_wrapper_holds_models_without_trainable_parameters():
    class Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2), requires_grad=False)

        def test_step(self, data):
            return data * self.w
    wrapped = CPUDistributedDataParallel(Frozen(), device_ids=[0])
    assert isinstance(wrapped.module, Frozen)
    assert torch.equal(wrapped.test_step(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    from mmengine.model import is_model_wrapper
    assert is_model_wrapper(wrapped)

