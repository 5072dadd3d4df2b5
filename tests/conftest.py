import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One intra-op thread, here and in the CLI subprocesses the tests start: the suite's tensors
# are small, and on 2 cores a second thread only adds synchronisation (five of the slowest
# tests: 292 s with 2 threads, 222 s with 1; results are the same).  Thread counts change
# no test's model, only its speed.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
