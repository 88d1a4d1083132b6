"""Which process of a launch this one is, so that only the main process tracks, saves and registers.

Under ``accelerate launch`` with several processes every process runs the same training code;
the trainings ask :func:`process_state` once and branch on it in one place (the other
processes take part in training only). ``accelerate launch`` of a MULTI_GPU config starts the
processes through torchrun (``WORLD_SIZE`` set), but on a machine without CUDA accelerate then
quietly gives each process a world of its own (a config's ``use_cpu`` does not reach the
processes): CPU is asked for explicitly there, so the processes join one gloo group, and a
launch that still forms the wrong world is refused rather than trained N times over.
"""

from __future__ import annotations

import os


def launched_processes() -> int:
    """How many processes the launcher started (1 when not launched as several)."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def process_state():
    """accelerate's :class:`~accelerate.PartialState` for this launch (a shared singleton: the
    trainers' ``Accelerator`` joins it); the same state as a plain ``Accelerator()`` in a single process."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    launched = launched_processes()
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (launched > 1 and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    if launched > 1 and state.num_processes != launched:
        raise RuntimeError(f"launched as {launched} processes (WORLD_SIZE) but accelerate formed a world of "
                           f"{state.num_processes} ({state.distributed_type}, device {state.device}): every process would "
                           "train, track and register on its own")
    return state
