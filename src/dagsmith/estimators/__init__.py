"""Built-in estimators: scikit-learn-style models that train data-parallel under
`training.distributed` (see docs/distributed.md).

    training:
      model:
        estimator: dagsmith.estimators.TorchMLPClassifier
        params: {hidden_layers: [64, 32], epochs: 20, lr: 0.001, batch_size: 64, seed: 0}
      distributed: {framework: torch, workers: 2}

torch is imported only when a model is fitted or used (`pip install 'dagsmith[train]'`).
"""

from __future__ import annotations

__all__ = ["TorchMLPClassifier", "TorchMLPRegressor"]


def __getattr__(name: str):
    if name in __all__:
        from . import torch_mlp

        return getattr(torch_mlp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
