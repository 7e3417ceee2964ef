"""The Parquet schemas of a run folder's tables; the trials' and epochs' columns generated from the
config and the report types they hold.
"""

from __future__ import annotations

from dataclasses import fields

import pyarrow as pa

from ..config import TrainConfig
from .reports import EpochReport


def _train_columns() -> list[tuple[str, pa.DataType]]:
    """One column per ``TrainConfig`` field, typed from its annotation (a new field gets its column
    without an edit here)."""
    kinds = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), tuple[float, float]: pa.list_(pa.float64())}
    return [(name, kinds.get(f.annotation, pa.string())) for name, f in TrainConfig.model_fields.items()]


TRIALS_SCHEMA = pa.schema([
    ("trial", pa.string()),  # experiment name; in a search <experiment>-<sample>
    ("trial_id", pa.string()),
    ("status", pa.string()),  # finished | stopped (by ASHA, in a search) | failed
    ("error", pa.string()),
    ("conv_filters", pa.list_(pa.int32())),
    ("conv_layers", pa.int32()),
    ("fc_layers", pa.list_(pa.int32())),
    ("max_pool", pa.bool_()),
    ("stride", pa.int32()),
    ("kernel_size", pa.int32()),
    # every train field, generated from TrainConfig so none is left out; precision holds what the
    # trial computed in (train.precision resolved): fp32 | bf16
    *_train_columns(),
    ("params", pa.int64()),
    ("flops", pa.int64()),
    ("best_epoch", pa.int32()),
    ("val_acc", pa.float64()),
    ("test_acc", pa.float64()),
    ("train_seconds", pa.float64()),
    ("images_per_s", pa.float64()),
    ("workers", pa.int32()),
    ("node", pa.string()),  # host name of the trial's rank-0 worker
    ("node_id", pa.string()),  # its Ray node id: tells apart several nodes on one host
    ("rank_nodes", pa.list_(pa.string())),  # host name of every rank, in rank order (DDP may span nodes)
    ("rank_node_ids", pa.list_(pa.string())),  # their Ray node ids
    ("experiment", pa.string()),  # the experiment the trial belongs to (a search has several per experiment)
    ("sample", pa.int32()),  # a search's recipe number within its experiment; 0 without a search
    ("searched", pa.string()),  # a search's drawn values as JSON, keyed like search.space
    ("epochs_run", pa.int32()),  # epochs trained (fewer than epochs where ASHA stopped the trial)
])


EPOCHS_SCHEMA = pa.schema([  # one row per (trial, epoch): an EpochReport, so the two cannot drift
    ("trial", pa.string()),
    *((f.name, pa.int32() if f.type in (int, "int") else pa.float64()) for f in fields(EpochReport)),  # lr: null in old runs
])


OCCLUSION_SCHEMA = pa.schema([
    ("trial", pa.string()),
    ("index", pa.int64()),  # row of the packed dataset
    ("true", pa.int32()),
    ("pred", pa.int32()),
    ("target", pa.int32()),  # the class whose probability the map holds
    ("target_kind", pa.string()),  # true | predicted
    ("correct", pa.bool_()),
    ("clean_prob", pa.float32()),
    ("window", pa.int32()),
    ("stride", pa.int32()),
    ("fill", pa.string()),
    ("map_h", pa.int32()),
    ("map_w", pa.int32()),
    ("map", pa.list_(pa.float32())),  # row-major, map_h x map_w
    ("min_prob", pa.float32()),
    ("min_y", pa.int32()),  # top-left pixel of the window with the lowest probability
    ("min_x", pa.int32()),
    ("box", pa.list_(pa.int32())),  # x0, y0, x1, y1 of the object, when known
    ("object_share", pa.float32()),  # share of the confidence drop on windows centred in the box
    ("box_share", pa.float32()),  # share of window centres in the box
    ("pointing", pa.bool_()),  # the largest drop lies inside the box
    ("node", pa.string()),  # host:pid of the actor that drew the map
    ("node_id", pa.string()),  # its Ray node id
    # Methods beside occlusion and their checks (attribution/analyse.py); one row per image, target, method.
    ("method", pa.string()),  # occlusion | saliency | integrated_gradients | grad_cam
    ("deletion", pa.list_(pa.float32())),  # target probability as the map's first pixels go to the fill
    ("insertion", pa.list_(pa.float32())),  # ... as they are added onto the blurred image
    ("deletion_auc", pa.float32()),  # lower: the map found what the model needs
    ("insertion_auc", pa.float32()),  # higher: likewise
    ("random_deletion", pa.list_(pa.float32())),  # the same curves for a random ranking of the image
    ("random_insertion", pa.list_(pa.float32())),
    ("centre_deletion", pa.list_(pa.float32())),  # ... and for the centre-first ranking
    ("centre_insertion", pa.list_(pa.float32())),
    ("sanity_layers", pa.list_(pa.string())),  # cascading randomisation, logits first (null: not checked)
    ("sanity_rho", pa.list_(pa.float32())),  # rank correlation with the trained model's map, per layer
])


PREDICTIONS_SCHEMA = pa.schema([
    ("index", pa.int64()),  # row of the packed dataset
    ("true", pa.int32()),
    ("pred", pa.int32()),
    ("p_true", pa.float32()),
    ("p_pred", pa.float32()),
    ("top5", pa.list_(pa.int32())),
])

