"""``anomalyclip``: AnomalyCLIP (Zanella et al. 2024).

:mod:`.config` hyper-parameters, :mod:`.net` the network, :mod:`.losses` eqs. 5-14,
:mod:`.train` clip layouts, schedule and loop, :mod:`.head` the head (see its docstring).
"""

from vadpipe.heads.anomalyclip.config import AnomalyClipConfig
from vadpipe.heads.anomalyclip.head import AnomalyClipHead
from vadpipe.heads.anomalyclip.net import AnomalyClipNet, AxialTemporalModel, Selector
from vadpipe.heads.anomalyclip.train import (
    directions_from_text,
    inference_clip_indices,
    lr_at,
    train_anomalyclip,
    training_clip_indices,
)

__all__ = [
    "AnomalyClipConfig", "AnomalyClipHead", "AnomalyClipNet", "AxialTemporalModel", "Selector",
    "directions_from_text", "inference_clip_indices", "lr_at", "train_anomalyclip", "training_clip_indices",
]
