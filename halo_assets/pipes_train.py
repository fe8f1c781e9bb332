"""torchrun's target for the trained_model asset: halo_core.train's CLI inside a Dagster Pipes session,
so rank 0's training log (the only rank that logs) reaches the run's event log; halo_core stays free
of Dagster. Arguments are halo_core.train's."""

import logging
import os

from dagster_pipes import open_dagster_pipes

from halo_core import train


class PipesLogHandler(logging.Handler):
    def __init__(self, pipes_log: logging.Logger):
        super().__init__(logging.INFO)
        self.pipes_log = pipes_log

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes_log.log(record.levelno, record.getMessage())


def main() -> None:
    if os.environ.get("RANK", "0") != "0":  # one Pipes session per step: the other ranks only train
        train.main()
        return
    with open_dagster_pipes() as pipes:
        logging.getLogger("halo_core").addHandler(PipesLogHandler(pipes.log))
        train.main()


if __name__ == "__main__":
    main()
