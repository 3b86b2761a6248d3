"""Shared test constants: the flags of a tiny VDSM run (seconds on a CPU)."""


def tiny_run_flags(steps=2, batch_size=2):
    return ["--z-dim", "4", "--n-experts", "3", "--encoder-widths", "4", "4", "4", "4", "--encoder-features", "8",
            "--decoder-widths", "8", "8", "4", "4", "--dynamics-dim", "3", "--trans-dim", "4", "--rnn-dim", "8",
            "--rnn-layers", "1", "--batch-size", str(batch_size), "--steps", str(steps), "--eval-sequences", "4",
            "--num-workers", "0", "--no-progress"]
