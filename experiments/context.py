"""What one training command fixed, in one object that the runner passes below it (training, the
end-of-run report, a quality monitor): no argparse namespace travels further than ``experiments.run``."""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

import data
from vdsm.checkpoint import CheckpointManager
from vdsm.train import TrainOptions

from .cli import UsageError, given_data_folder, recorded_data_options, run_data_root

__all__ = ["RunContext", "check_frames"]


def check_frames(x, config):
    nc = config["model"]["nc"]
    if tuple(x.shape[-3:]) != (nc, 64, 64):
        raise UsageError(f"dataset frames are {tuple(x.shape[-3:])} but the model expects ({nc}, 64, 64): "
                         f"pass --nc {x.shape[-3]} or resize the data to 64x64")


@dataclass(frozen=True)
class RunContext:
    """A training command's run: its spec and resolved config, where and how it trains.

    Built once by the runner (``from_args``); ``replace`` gives the same context with a field changed
    (the run folder once chosen, the device and rank under torchrun).
    """

    spec: object                   # the models.spec.ModelSpec
    config: dict                   # the resolved config.json
    device: torch.device
    stages: tuple                  # the stage tags this command trains, in order
    data_root: str = None          # downloads and caches (None: $VDSM_DATA_ROOT or ./data_cache)
    data_folder: dict = field(default_factory=dict)   # the raw-data folder flag of this command line
    num_workers: int = 1           # DataLoader worker processes
    checkpoint_every: int = 200    # steps between checkpoints
    checkpoint_minutes: float = 10.0
    keep_last: int = 3             # periodic checkpoints kept per stage
    amp: bool = False              # bf16 autocast of the networks
    progress: bool = True          # a progress bar
    eval_sequences: int = 256      # val sequences of the end-of-run numbers
    run_dir: Path = None
    rank: int = 0
    world_size: int = 1
    writer: object = None          # TensorBoard's SummaryWriter (rank 0)
    monitor: object = None         # ``monitor(run, stage, step, last)`` after every step

    @classmethod
    def from_args(cls, args, config, device, monitor=None):
        spec = args.spec
        stages = spec.cli.stages(args, spec) if spec.cli is not None else [stage.tag for stage in spec.stages]
        return cls(spec=spec, config=config, device=device, stages=tuple(stages), data_root=run_data_root(args, config),
                   data_folder=given_data_folder(args, config["dataset"]), num_workers=args.num_workers,
                   checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
                   keep_last=args.keep_last, amp=args.amp, progress=not args.no_progress,
                   eval_sequences=args.eval_sequences, monitor=monitor)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def data_options(self, stage):
        """The dataset options of ``stage``: the run's recorded ones, this command line's data folder,
        the stage's frames per sequence and flags."""
        return recorded_data_options(self.config, self.data_folder, **stage.data_options(self.config))

    def dataset(self, stage, split=None):
        """The training split (or ``split``) in ``stage``'s sequences, its frames checked against the
        model's channels (before anything is written)."""
        ds = data.get_dataset(self.config["dataset"], split or self.config["train_split"], self.data_root,
                              **self.data_options(stage))
        check_frames(ds[0][0], self.config)
        if hasattr(ds, "seed"):
            ds.seed = self.config["seed"]
        return ds

    def val_dataset(self, stage, **options):
        """The val split as ``stage`` reads it (``options`` in place of some of its options)."""
        return data.get_dataset(self.config["dataset"], "val", self.data_root, **{**self.data_options(stage), **options})

    def checkpoints(self, tag):
        return CheckpointManager(self.run_dir / "checkpoints", tag, every_steps=self.checkpoint_every,
                                 every_minutes=self.checkpoint_minutes, keep_last=self.keep_last)

    def train_options(self, section):
        s, safety = self.config[section], self.config["safety"]
        return TrainOptions(steps=s["steps"], lr=s["lr"], clip_norm=s["clip_norm"], max_bad_steps=safety["max_bad_steps"],
                            lr_drop=safety["lr_drop"], amp=self.amp, progress=self.progress,
                            schedule_steps=s.get("schedule_steps"))
