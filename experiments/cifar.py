"""ResNet-56 on CIFAR-10 (the paper's Table I and Figure 2): ``python -m experiments.cifar``.

  python -m experiments.cifar --config=experiments/configs/cifar.py:paper \\
      --config.optimizer=mbag --config.seed=0 --workdir=runs/cifar/mbag/seed_0 --data_dir=~/data

Presets (``paper``, ``short``, ``smoke``) and fields: ``experiments/configs/cifar.py``.
The data: ``cifar-10-python.tar.gz`` (see ``experiments.data``).
"""

from experiments import cli

CONFIG_FILE = "cifar.py"


def main(argv):
  """In-process entry point: ``main(["cifar", "--workdir=...", ...])`` returns the exit status."""
  return cli.main(argv, CONFIG_FILE)


if __name__ == "__main__":
  cli.absl_run(CONFIG_FILE)
