"""TorchMLPClassifier and TorchMLPRegressor: small multi-layer perceptrons in PyTorch with a
scikit-learn interface (fit / predict / predict_proba / get_params / set_params / clone).

Data-parallel training: when a process group is initialized (torch.distributed, as the
dagsmith runtime does for `training.distributed: {framework: torch}`, or horovod), every
worker calls `fit` on its own shard of the rows and the workers train one model together:

- the input scaling (mean / std of every feature, and of the target for the regressor), the
  classes and the number of steps per epoch are computed over all the shards;
- the initial weights come from `seed` (the same on every rank) and are broadcast from rank 0;
- after each backward pass the gradients are summed over the workers (one all-reduce of a
  flat tensor) and divided by the number of workers, so every rank takes the same optimizer
  step: parameters stay identical on all ranks. One step of W workers with batch_size B is
  one step on a global batch of W * B rows.
- a shard smaller than the largest one cycles through its rows again, so every rank takes
  the same number of steps (the all-reduces never wait on a rank that has finished).

Without a process group it is ordinary single-process training. The fitted model pickles
(joblib) without its torch module: the weights are kept as numpy arrays in `state_dict_` and
the module is rebuilt on first use.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

_ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise ModuleNotFoundError("dagsmith.estimators.TorchMLP* needs torch: pip install 'dagsmith[train]'",
                                  name="torch") from None
    return torch


# --- who trains together ---------------------------------------------------------------------

class _Local:
    """No process group: one worker."""

    rank, world_size, name = 0, 1, "local"

    def allreduce_sum_(self, tensor):
        return tensor

    def allgather_object(self, obj) -> list:
        return [obj]

    def broadcast_(self, tensor):
        return tensor


class _TorchDist:
    name = "torch"

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def allreduce_sum_(self, tensor):
        self.dist.all_reduce(tensor, op=self.dist.ReduceOp.SUM)
        return tensor

    def allgather_object(self, obj) -> list:
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast_(self, tensor):
        self.dist.broadcast(tensor, src=0)
        return tensor


class _Horovod:
    name = "horovod"

    def __init__(self, hvd):
        self.hvd = hvd
        self.rank, self.world_size = hvd.rank(), hvd.size()

    def allreduce_sum_(self, tensor):
        return self.hvd.allreduce_(tensor, op=self.hvd.Sum)

    def allgather_object(self, obj) -> list:
        return self.hvd.allgather_object(obj)

    def broadcast_(self, tensor):
        return self.hvd.broadcast_(tensor, root_rank=0)


def communicator():
    """The workers this process trains with: a torch.distributed process group, horovod, or none."""
    torch = _torch()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _TorchDist()
    hvd = sys.modules.get("horovod.torch")
    if hvd is not None:
        try:
            if hvd.is_initialized():
                return _Horovod(hvd)
        except (AttributeError, ValueError, RuntimeError):
            pass
    return _Local()


# --- the estimators -----------------------------------------------------------------------------

class _TorchMLP(BaseEstimator):
    _dagsmith_distributed = True  # trains one model across the workers of a process group

    def __init__(self, hidden_layers=(64,), activation="relu", epochs=20, lr=1e-3, batch_size=64,
                 weight_decay=0.0, seed=0, device=None, verbose=False):
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # subclasses: _outputs(y_info) -> int, _targets(y) -> tensor data, _loss(), _prepare_y(y, comm)

    def _layers(self) -> list[int]:
        hidden = self.hidden_layers
        if isinstance(hidden, int):
            hidden = [hidden]
        hidden = [int(h) for h in (hidden or [])]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_layers must be positive sizes, got {self.hidden_layers!r}")
        return hidden

    def _build(self, n_in: int, n_out: int):
        torch = _torch()
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU, "sigmoid": torch.nn.Sigmoid}[self.activation]
        layers, width = [], n_in
        for size in self._layers():
            layers += [torch.nn.Linear(width, size), act()]
            width = size
        layers.append(torch.nn.Linear(width, n_out))
        return torch.nn.Sequential(*layers)

    def _device(self) -> str:
        return self.device or os.environ.get("DAGSMITH_DEVICE") or "cpu"

    @staticmethod
    def _as_X(X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X has missing or infinite values: impute them (e.g. in a feature step) first")
        return X

    def fit(self, X, y):
        torch = _torch()
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        X = self._as_X(X)
        y = np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows and y {len(y)}")
        epochs, batch_size = int(self.epochs), int(self.batch_size)
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        comm = communicator()
        self.world_size_, self.rank_ = comm.world_size, comm.rank

        # Global statistics, gathered (not all-reduced) and summed in rank order: identical
        # on every rank, bit for bit.
        local = {"n": len(X), "sum": X.astype(np.float64).sum(axis=0), "sq": (X.astype(np.float64) ** 2).sum(axis=0),
                 "y": self._y_summary(y), "features": X.shape[1]}
        gathered = comm.allgather_object(local)
        if len({g["features"] for g in gathered}) != 1:
            raise ValueError(f"the workers' shards have different numbers of columns: {[g['features'] for g in gathered]}")
        n_total = sum(g["n"] for g in gathered)
        if n_total == 0:
            raise ValueError("no training rows")
        mean = sum(g["sum"] for g in gathered) / n_total
        var = sum(g["sq"] for g in gathered) / n_total - mean ** 2
        std = np.sqrt(np.maximum(var, 0.0))
        std[std < 1e-12] = 1.0
        self.x_mean_, self.x_scale_ = mean.astype(np.float32), std.astype(np.float32)
        n_out = self._fit_targets([g["y"] for g in gathered], n_total)
        self.n_features_in_ = X.shape[1]
        steps = max(1, math.ceil(max(g["n"] for g in gathered) / batch_size))
        per_epoch = max(g["n"] for g in gathered)

        device = torch.device(self._device())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            net = self._build(X.shape[1], n_out).to(device)
        params = list(net.parameters())
        for p in params:  # a rank without rows still takes part in every all-reduce (with zeros)
            p.grad = torch.zeros_like(p)
        with torch.no_grad():
            for p in params:  # same seed gives the same weights; the broadcast makes sure
                comm.broadcast_(p.data)
        optimizer = torch.optim.Adam(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
        loss_fn = self._loss()

        Xt = torch.from_numpy((X - self.x_mean_) / self.x_scale_).to(device)
        yt = self._target_tensor(y).to(device)
        rng = np.random.default_rng([int(self.seed), comm.rank])
        self.loss_curve_ = []
        net.train()
        for epoch in range(epochs):
            if len(X):
                order = np.resize(rng.permutation(len(X)), per_epoch)  # a short shard cycles
            total = 0.0
            for step in range(steps):
                optimizer.zero_grad(set_to_none=False)
                index = order[step * batch_size:(step + 1) * batch_size] if len(X) else []
                if len(index):
                    batch = torch.from_numpy(np.asarray(index)).to(device)
                    loss = loss_fn(net(Xt[batch]), yt[batch])
                    loss.backward()
                    total += float(loss.detach()) * len(index)
                if comm.world_size > 1:
                    flat = torch.cat([p.grad.reshape(-1) for p in params])
                    comm.allreduce_sum_(flat)
                    flat /= comm.world_size
                    offset = 0
                    for p in params:
                        count = p.grad.numel()
                        p.grad.copy_(flat[offset:offset + count].view_as(p.grad))
                        offset += count
                optimizer.step()
            self.loss_curve_.append(total / max(1, per_epoch))
            if self.verbose:
                print(f"[rank {comm.rank}/{comm.world_size}] epoch {epoch + 1}/{epochs} loss {self.loss_curve_[-1]:.5f}",
                      file=sys.stderr, flush=True)
        net.eval()
        self.state_dict_ = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        self.n_outputs_ = n_out
        self._net = None
        return self

    # --- using a fitted model --------------------------------------------------------------

    def _module(self):
        torch = _torch()
        if getattr(self, "state_dict_", None) is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")
        net = getattr(self, "_net", None)
        if net is None:
            net = self._build(self.n_features_in_, self.n_outputs_)
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state_dict_.items()})
            net.eval()
            self._net = net
        return net

    def _forward(self, X) -> np.ndarray:
        torch = _torch()
        net = self._module()
        X = self._as_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns, the model was fitted on {self.n_features_in_}")
        X = (X - self.x_mean_) / self.x_scale_
        out = []
        with torch.no_grad():
            for start in range(0, len(X), 65536):
                out.append(net(torch.from_numpy(X[start:start + 65536])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs_), dtype=np.float32)

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_net", None)  # rebuilt from state_dict_ on first use
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._net = None


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    """A multi-layer perceptron classifier (softmax, cross-entropy, Adam)."""

    def _y_summary(self, y):
        return np.unique(y)

    def _fit_targets(self, summaries, n_total) -> int:
        classes = np.unique(np.concatenate([np.asarray(s) for s in summaries]))
        if len(classes) < 2:
            raise ValueError(f"the target has {len(classes)} class(es): a classifier needs at least 2")
        self.classes_ = classes
        return len(classes)

    def _target_tensor(self, y):
        torch = _torch()
        return torch.from_numpy(np.searchsorted(self.classes_, y).astype(np.int64))

    def _loss(self):
        return _torch().nn.CrossEntropyLoss()

    def predict_proba(self, X) -> np.ndarray:
        torch = _torch()
        logits = torch.from_numpy(self._forward(X))
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self._forward(X), axis=1)]


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    """A multi-layer perceptron regressor (mean squared error on the standardized target, Adam)."""

    def _y_summary(self, y):
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y has missing or infinite values")
        return {"sum": float(y.sum()), "sq": float((y ** 2).sum())}

    def _fit_targets(self, summaries, n_total) -> int:
        mean = sum(s["sum"] for s in summaries) / n_total
        var = sum(s["sq"] for s in summaries) / n_total - mean ** 2
        self.y_mean_, self.y_scale_ = float(mean), float(math.sqrt(var)) if var > 1e-24 else 1.0
        return 1

    def _target_tensor(self, y):
        torch = _torch()
        y = (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_
        return torch.from_numpy(y.astype(np.float32).reshape(-1, 1))

    def _loss(self):
        return _torch().nn.MSELoss()

    def predict(self, X) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_
