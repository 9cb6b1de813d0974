"""Deep autoencoders on FACES / CURVES / MNIST (the paper's Figure 3): ``python -m experiments.autoencoder``.

  python -m experiments.autoencoder --config=experiments/configs/autoencoder.py:paper \\
      --config.dataset=faces --config.optimizer=mbag --workdir=runs/faces/mbag/seed_0 --data_dir=~/data

Presets (``paper``, ``short``, ``smoke``) and fields: ``experiments/configs/autoencoder.py``.
The data: Martens' ``newfaces_rot_single.mat``, ``digs3pts_1.mat``, MNIST's IDX files
(see ``experiments.data``).
"""

from experiments import cli

CONFIG_FILE = "autoencoder.py"


def main(argv):
  """In-process entry point: ``main(["autoencoder", "--workdir=...", ...])`` returns the exit status."""
  return cli.main(argv, CONFIG_FILE)


if __name__ == "__main__":
  cli.absl_run(CONFIG_FILE)
