"""Multi-process runs on GPUs and on CPUs.

mmengine's launchers (``--launcher pytorch`` under ``torchrun``, ``--launcher slurm`` under
``srun``) assume CUDA: ``init_dist`` calls ``torch.cuda.set_device`` and the Runner wraps the
model in DDP with ``device_ids=[LOCAL_RANK]``. :func:`setup_distributed` keeps that path on GPU
machines (NCCL) and, where there is no GPU, initialises a Gloo process group itself and names a
CPU-aware DDP wrapper, so the same commands run on a CPU cluster:

* the process group exists before the Runner is built, so ``Runner.setup_env`` skips
  ``init_dist`` (it only initialises when none exists);
* mmengine's ``DefaultSampler`` shards the data by rank and ``collect_results`` gathers the
  predictions back in dataset order, so metrics do not depend on the number of processes;
* :class:`CPUDistributedDataParallel` is DDP with ``device_ids=None`` (what DDP needs for CPU
  modules) and no wrapper at all for models without trainable parameters (training-free
  segmentors, which DDP refuses to wrap).
"""
import atexit
import os
import re
import subprocess
from typing import Tuple

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from torch import nn

from ..registry import MODEL_WRAPPERS

__all__ = ['setup_distributed', 'init_process_group', 'launcher_env', 'rank_and_world',
           'first_slurm_host', 'teardown_distributed', 'CPUDistributedDataParallel']

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def launcher_env(launcher: str, port: int = 29500) -> Tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` for ``launcher``; for Slurm also exports ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` (the first host of the job) and
    ``MASTER_PORT`` (kept if set) as torch's ``env://`` rendezvous expects."""
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            raise ValueError(f'--launcher pytorch needs {", ".join(missing)} in the environment: '
                             'start it with torchrun (python -m torch.distributed.run)')
        rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
        return rank, int(os.environ.get('LOCAL_RANK', rank)), world
    if launcher == 'slurm':
        try:
            rank, world = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        except KeyError as e:
            raise ValueError(f'--launcher slurm needs {e.args[0]} in the environment: start it '
                             'with srun') from None
        local = int(os.environ.get('SLURM_LOCALID', 0))
        if 'MASTER_ADDR' not in os.environ:
            nodes = os.environ.get('SLURM_NODELIST', '127.0.0.1')
            try:
                host = subprocess.run(['scontrol', 'show', 'hostname', nodes], check=True,
                                      capture_output=True, text=True).stdout.split()[0]
            except (OSError, subprocess.CalledProcessError, IndexError):
                host = first_slurm_host(nodes)
            os.environ['MASTER_ADDR'] = host
        os.environ.setdefault('MASTER_PORT', str(port))
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        return rank, local, world
    if launcher == 'mpi':
        rank = int(os.environ.get('OMPI_COMM_WORLD_RANK', 0))
        world = int(os.environ.get('OMPI_COMM_WORLD_SIZE', 1))
        return rank, int(os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', 0)), world
    return 0, 0, 1


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list without ``scontrol``: ``'gpu[03-05,07],cpu1'`` ->
    ``'gpu03'``, ``'node1,node2'`` -> ``'node1'``."""
    m = re.match(r'([^,\[]+)(?:\[([^\]]+)\])?', nodelist.strip())
    if m is None:
        raise ValueError(f'cannot read the Slurm node list {nodelist!r}')
    prefix, ranges = m.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(',')[0].split('-')[0]


def init_process_group(launcher: str, backend: str = None) -> bool:
    """Initialise torch.distributed for ``launcher`` if it is not yet: Gloo on CPU machines,
    NCCL (after ``set_device``) on GPU machines unless ``backend`` says otherwise. Returns
    whether a process group exists afterwards."""
    if launcher == 'none':
        return torch_dist.is_available() and torch_dist.is_initialized()
    if launcher not in LAUNCHERS:
        raise ValueError(f'unknown launcher {launcher!r}; choose from {", ".join(LAUNCHERS)}')
    if torch_dist.is_initialized():
        return True
    rank, local, world = launcher_env(launcher)
    cuda = torch.cuda.is_available()
    backend = backend or ('nccl' if cuda else 'gloo')
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    os.environ.setdefault('LOCAL_RANK', str(local))
    torch_dist.init_process_group(backend=backend, rank=rank, world_size=world)
    # A safety net for every exit path (errors included): a group still alive at interpreter
    # finalisation can abort the process from Gloo's worker threads ("terminate called without
    # an active exception"; pytorch/pytorch#190489), which torchrun reports as a failed run.
    atexit.register(teardown_distributed, barrier=False)
    return True


def rank_and_world() -> Tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` without a group)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def setup_distributed(cfg) -> None:
    """Prepare ``cfg`` (an mmengine Config with ``launcher`` set) for a multi-process run.

    On a machine with GPUs nothing changes (mmengine initialises NCCL itself). Without a GPU,
    a Gloo process group is initialised here and the model wrapper becomes
    ``densekit.CPUDistributedDataParallel`` unless the config names another one."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    backend = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('backend')
    if backend == 'nccl':
        backend = 'gloo'          # configs name NCCL for GPUs; there is none here
    init_process_group(launcher, backend)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = backend or 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='densekit.CPUDistributedDataParallel')


def teardown_distributed(barrier: bool = True) -> None:
    """Wait for every rank (``barrier``), then destroy the process group. Without it, Gloo's
    threads can abort a rank at interpreter exit ("terminate called without an active
    exception"), which torchrun reports as a failed run although the results are written.
    Without the barrier it is safe once this rank's last collective has returned."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        if barrier:
            torch_dist.barrier()
        torch_dist.destroy_process_group()


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU processes.

    * ``device_ids`` is dropped for modules on the CPU (DDP only accepts ``None`` there; the
      Runner passes ``[LOCAL_RANK]``);
    * a model without trainable parameters is held, not wrapped: DDP refuses such modules, and
      there are no gradients to synchronise. ``val_step`` / ``test_step`` run the module as
      mmengine's wrapper does.
    """

    def __init__(self, module: nn.Module, device_ids=None, **kwargs):
        if not any(p.requires_grad for p in module.parameters()):
            nn.Module.__init__(self)
            self.module = module
            return
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)
