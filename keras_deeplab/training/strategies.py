"""Where a training run executes: tf.distribute on TensorFlow, or Keras's own
`keras.distribution.DataParallel` on JAX, within one process or across many.

`model.fit` cannot run under tf.distribute's MultiWorkerMirroredStrategy in
Keras 3 (keras-team/keras#20585), so training past one host goes through
`data_parallel` on the JAX backend: processes find each other through the
standard KERAS_DISTRIBUTION_* variables and JAX's coordination service.
"""

import contextlib
import os
import socket

import keras

from keras_deeplab.utils.errors import UserInputError, first_line

JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
_CLUSTER_VARIABLES = (JOB_ADDRESSES, NUM_PROCESSES, PROCESS_ID)
# JAX's default heartbeat timeout is 100 s: the survivors of a dead process
# would wait that long before JAX stops them. Heartbeats come from a
# background thread, so long compiles do not delay them.
HEARTBEAT_TIMEOUT_S = 20
_MAX_PORT = 65535


class DistributedRunError(UserInputError):
    """Another process of a multi-process run failed; restart all with
    `--resume`. A UserInputError so the CLI reports it in one line."""


class TensorFlowRun:
    """A run under a tf.distribute strategy: the model and optimizer are
    created in its scope; it splits uneven batches across replicas itself;
    the chief (or worker 0, or a lone process) writes."""

    replicas = 1  # equal shares per replica are tf.distribute's business

    def __init__(self, strategy):
        self.strategy = strategy

    @property
    def is_chief(self) -> bool:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return True
        return resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0
        )

    def build_scope(self):
        return self.strategy.scope()

    def run_scope(self):
        return contextlib.nullcontext()

    def failures_reported(self):
        return contextlib.nullcontext()


class KerasDistributionRun:
    """A run under `keras.distribution.DataParallel` (JAX), in one process
    or many: the distribution is active for the whole run (it places every
    batch), every replica needs an equal share of each batch, and process 0
    writes."""

    def __init__(self, distribution):
        self.distribution = distribution

    @property
    def replicas(self) -> int:
        return self.distribution.num_model_replicas

    @property
    def is_chief(self) -> bool:
        # One data shard per process, numbered by rank.
        return self.distribution.data_shard_id == 0

    def build_scope(self):
        return contextlib.nullcontext()  # run_scope already covers it

    def run_scope(self):
        return self.distribution.scope()

    @contextlib.contextmanager
    def failures_reported(self):
        """Turns a collective that failed because a peer process died into
        a DistributedRunError that says how to continue."""
        if self.distribution.num_processes == 1:
            yield
            return
        import jax

        try:
            yield
        except jax.errors.JaxRuntimeError as err:
            raise DistributedRunError(
                f"process {self.distribution.data_shard_id} of "
                f"{self.distribution.num_processes} stopped: a collective "
                f"with the other processes failed ({first_line(err)}). "
                "Another process probably died; start every process again "
                "with --resume."
            ) from err


def make_run(name: str):
    """The engine of strategy `name`.

    default: one device (tf.distribute's default strategy).
    mirrored: tf.distribute.MirroredStrategy over every local device.
    multi_worker: tf.distribute.MultiWorkerMirroredStrategy from TF_CONFIG
        (model.fit cannot run under it in Keras <= 3.15; kept for the day it
        can).
    data_parallel: keras.distribution.DataParallel over every device of
        every process (JAX backend); processes join through the
        KERAS_DISTRIBUTION_* variables when those are set.

    Returns:
        TensorFlowRun or KerasDistributionRun.

    Raises:
        UserInputError: the strategy needs another backend, TF_CONFIG, or
            the cluster variables are incomplete or invalid.
    """
    if name == "data_parallel":
        return KerasDistributionRun(_data_parallel())
    import tensorflow as tf

    if name == "mirrored":
        return TensorFlowRun(tf.distribute.MirroredStrategy())
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserInputError(
                "strategy='multi_worker' needs the TF_CONFIG environment "
                "variable describing the cluster; see docs/training.md, "
                "Distribution."
            )
        return TensorFlowRun(tf.distribute.MultiWorkerMirroredStrategy())
    return TensorFlowRun(tf.distribute.get_strategy())


def cluster_process_id() -> int:
    """This process's rank from KERAS_DISTRIBUTION_PROCESS_ID (0 if unset),
    readable before the processes have joined."""
    if not os.environ.get(PROCESS_ID):
        return 0
    return _int_variable(PROCESS_ID, minimum=0)


@contextlib.contextmanager
def process_local():
    """Suspends the active keras.distribution while one process writes a
    file.

    Keras's saving code creates throwaway variables (it instantiates an
    optimizer to learn which attributes to skip); under a multi-process
    distribution each variable creation is a collective that the processes
    which do not write never join, so the writer would wait forever.
    Reading the replicated weights needs no other process.
    """
    active = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(active)


def _data_parallel():
    if keras.backend.backend() != "jax":
        raise UserInputError(
            "strategy='data_parallel' uses keras.distribution, which trains "
            f"on the JAX backend, not {keras.backend.backend()!r}: start with "
            "KERAS_BACKEND=jax (or use strategy=mirrored on TensorFlow for "
            "one host)."
        )
    cluster = cluster_from_environment()
    if cluster is not None:
        _join(*cluster)
    return keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()
    )


def cluster_from_environment():
    """(coordinator, count, rank) from KERAS_DISTRIBUTION_*, None if unset."""
    present = [name for name in _CLUSTER_VARIABLES if os.environ.get(name)]
    if not present:
        return None
    missing = [name for name in _CLUSTER_VARIABLES if name not in present]
    if missing:
        raise UserInputError(
            f"{', '.join(present)} set but {', '.join(missing)} not: a "
            "multi-process run needs all three KERAS_DISTRIBUTION_* "
            "variables (coordinator host:port, process count, this "
            "process's rank)."
        )
    count = _int_variable(NUM_PROCESSES, minimum=1)
    rank = _int_variable(PROCESS_ID, minimum=0)
    if rank >= count:
        raise UserInputError(
            f"{PROCESS_ID}={rank} is out of range for {NUM_PROCESSES}="
            f"{count}; expected 0 to {count - 1}."
        )
    # Keras accepts every job's address and uses the first (process 0's).
    coordinator = os.environ[JOB_ADDRESSES].split(",")[0].strip()
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= _MAX_PORT:
        raise UserInputError(
            f"{JOB_ADDRESSES}={os.environ[JOB_ADDRESSES]!r} does not start "
            "with host:port (a port from 1 to 65535, the same on every "
            "process); expected process 0's address, e.g. 10.0.0.1:1234."
        )
    return coordinator, count, rank


def _check_port_free(coordinator):
    """Process 0 serves the coordinator on `coordinator`'s port: a port
    another program holds makes JAX crash without a word, so try it first."""
    port = int(coordinator.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Past connections lingering in TIME_WAIT do not block a server.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as err:
            raise UserInputError(
                f"{JOB_ADDRESSES}={coordinator}: process 0 cannot serve the "
                f"coordinator on port {port} ({err.strerror}); another "
                "program, or a run still going, holds it. Choose a free port "
                "and set it on every process."
            ) from err


def _int_variable(name, *, minimum):
    value = os.environ[name]
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise UserInputError(
            f"{name}={value!r} is not an integer >= {minimum}."
        )
    return number


def _join(coordinator, count, rank):
    """Joins the JAX processes as keras.distribution.initialize does, with a
    heartbeat timeout that bounds how long a dead peer goes unnoticed.

    When a process dies, JAX's coordination service terminates every other
    process (SIGABRT, "Terminating process because the JAX distributed
    service detected fatal errors ... another task died") once the dead one
    misses heartbeats for HEARTBEAT_TIMEOUT_S. JAX's recoverable mode would
    keep the survivors alive to report the failure in Python, but it also
    drops the shutdown barrier, so a process that finishes last is then
    aborted by the first one's exit.
    """
    import jax

    if jax.distributed.is_initialized():
        return
    if rank == 0:
        _check_port_free(coordinator)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=count,
        process_id=rank,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
    )
    # keras.distribution.initialize also agrees on a random seed across the
    # processes; `train` always sets config.seed on every process instead.
