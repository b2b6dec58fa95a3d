"""Several training processes on one machine (`train.strategy=ddp train.devices=N`): Lightning's DDP, with t2s's
own child command.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the script that started rank 0 with the same argument
list. Under `t2s train` that is neither possible nor what we want: the console script's `sys.argv[0]` is the word
`t2s train` (no file) and `python -m t2s.cli` would lose the `train` subcommand; a notebook or a test has no command
at all; and a recipe that trains several models in one command (self-evolution rounds) must not re-run its generation
runs on every rank. So rank 0 pickles the exact call it is making (`train_sft(settings, root config, out_dir)`) into
`<out>/ddp_job.pkl` before it starts the others, and each child runs `python -m t2s.train.launch <out>/ddp_job.pkl`
with `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set as Lightning sets them. A child rebuilds the model
and the rows itself (deterministic: same seed, same files) and writes nothing but its log lines; Lightning's process
observer kills every rank when one dies.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

JOB_FILE = "ddp_job.pkl"

#: what `train.strategy` may be; the others are refused in `SFTConfig.__post_init__` (see `strategy_problem`)
STRATEGIES = ("auto", "ddp")


def strategy_problem(strategy: str, accelerator: str) -> str | None:
    """Why `train.strategy` cannot run with `train.accelerator` (None when it can): checked before anything loads."""
    if strategy in STRATEGIES:
        return None
    if strategy.startswith("fsdp"):
        if accelerator in ("cpu",):
            return (f"train.strategy={strategy} needs CUDA GPUs: Lightning's FSDPStrategy refuses accelerator=cpu "
                    "(torch's FSDP runs here only without Lightning). On CPU use train.strategy=ddp "
                    "train.devices=N (gloo).")
        return (f"train.strategy={strategy} is not offered: t2s has never run it (no machine with several GPUs), and "
                "its adapter save and validation would read sharded weights. Use train.strategy=ddp: the LoRA "
                "adapter's weights are the only trainable ones, so DDP keeps one copy of the frozen base per GPU "
                "(a 7B base in bf16 fits an 80 GB GPU).")
    if strategy.startswith("deepspeed"):
        return (f"train.strategy={strategy} is not offered: Lightning's DeepSpeedStrategy runs only on CUDA GPUs "
                "(none here to run it), no t2s extra installs deepspeed, and resuming would need DeepSpeed's "
                "checkpoint folder instead of last.ckpt. Use train.strategy=ddp.")
    return f"train.strategy={strategy!r}: use one of {', '.join(STRATEGIES)}"


def launch_rank() -> int:
    """This process's global rank before the process group exists (0 for rank 0 and for a lone process): `RANK`
    (torchrun, accelerate), else `NODE_RANK * LOCAL_WORLD_SIZE + LOCAL_RANK` as Lightning's launcher sets them."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    node = int(os.environ.get("NODE_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or 1
    return node * per_node + local


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def write_job(path: Path, cfg: Any, root: Any, out_dir: Path) -> None:
    """Pickle the call rank 0 makes, for the child ranks (written atomically before they start)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps({"cfg": cfg, "root": root, "out_dir": str(out_dir)}))
    os.replace(tmp, path)


def ddp_strategy(job: Path, accelerator: str) -> Any:
    """Lightning's `DDPStrategy` (gloo on CPU) whose launcher starts the children as `python -m t2s.train.launch`."""
    from pytorch_lightning.strategies import DDPStrategy
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    class JobLauncher(_SubprocessScriptLauncher):
        """Lightning's subprocess launcher with the child command replaced (environment set as Lightning does)."""

        def _call_children_scripts(self) -> None:
            self._check_can_spawn_children()
            self.procs = []
            env = self.cluster_environment
            os.environ["MASTER_ADDR"] = env.main_address
            os.environ["MASTER_PORT"] = str(env.main_port)
            os.environ["NODE_RANK"] = str(env.node_rank())
            os.environ["LOCAL_RANK"] = str(env.local_rank())
            os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
            os.environ["LOCAL_WORLD_SIZE"] = str(self.num_processes)
            for local_rank in range(1, self.num_processes):
                child = {**os.environ, "LOCAL_RANK": str(local_rank)}
                self.procs.append(subprocess.Popen([sys.executable, "-m", "t2s.train.launch", str(job)], env=child))

    class T2SDDPStrategy(DDPStrategy):
        """DDP whose launcher is `JobLauncher` (under torchrun or SLURM, which start the ranks themselves, the
        launcher starts none)."""

        def _configure_launcher(self) -> None:
            assert self.cluster_environment is not None
            self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    return T2SDDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else None)


def main(argv: list[str] | None = None) -> int:
    """A child rank: `python -m t2s.train.launch <out>/ddp_job.pkl` (started by rank 0, never by hand)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or "LOCAL_RANK" not in os.environ:
        print("usage: LOCAL_RANK=<n> python -m t2s.train.launch <out>/ddp_job.pkl (rank 0 starts this itself)",
              file=sys.stderr)
        return 2
    from t2s.config import register_configs
    from t2s.train.sft_trainer import train_sft

    register_configs()
    job = pickle.loads(Path(args[0]).read_bytes())
    train_sft(job["cfg"], job["root"], Path(job["out_dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
