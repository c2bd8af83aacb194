"""Layer-wise learning-rate decay (finetune.layer_lr_decay) in the fine-tuning optimizer's groups."""

import pytest

from bertops.config import FinetuneParams, TaskParams
from bertops.data import tasks as T
from bertops.model.multitask import MultiTaskModel
from bertops.train.finetune_module import layer_lr_scale, param_groups

SPECS = [T.TaskSpec.from_params("sent", TaskParams(type="sequence_classification", path="x", text_fields=["text"],
                                                   labels=["neg", "pos"], max_seq_length=16))]


def _lr_of(model, groups):
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {name: by_param[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def test_layer_lr_scale():
    assert layer_lr_scale("encoder.embeddings.word_embeddings.weight", 4, 0.5) == 0.5 ** 4
    assert layer_lr_scale("encoder.encoder.layer.0.attention.self.query.weight", 4, 0.5) == 0.5 ** 3
    assert layer_lr_scale("encoder.encoder.layer.3.output.dense.bias", 4, 0.5) == 1.0
    assert layer_lr_scale("encoder.pooler.dense.weight", 4, 0.5) == 1.0
    assert layer_lr_scale("encoder.encoder.layer.0.output.dense.bias", 4, None) == 1.0
    assert layer_lr_scale("encoder.embeddings.word_embeddings.weight", 4, 1.0) == 1.0


@pytest.mark.parametrize("decay", [None, 0.8])
def test_param_groups_get_the_decayed_rates(encoder_dir, decay):
    model = MultiTaskModel.build(encoder_dir, SPECS)  # 2 layers
    ft = FinetuneParams(learning_rate=1e-3, head_learning_rate=5e-3, layer_lr_decay=decay)
    lrs = _lr_of(model, param_groups(model, ft))
    d = decay or 1.0
    seen = set()
    for name, lr in lrs.items():
        if name.startswith("encoder.embeddings."):
            want, kind = 1e-3 * d ** 2, "embeddings"
        elif name.startswith("encoder.encoder.layer.0."):
            want, kind = 1e-3 * d, "layer 0"
        elif name.startswith("encoder.encoder.layer.1."):
            want, kind = 1e-3, "layer 1"
        elif name.startswith("encoder."):
            want, kind = 1e-3, "pooler"
        else:
            want, kind = 5e-3, "heads"  # heads keep head_learning_rate, never decayed
        assert lr == pytest.approx(want), name
        seen.add(kind)
    assert seen == {"embeddings", "layer 0", "layer 1", "pooler", "heads"}
    # every trainable parameter is in exactly one group
    groups = param_groups(model, ft)
    assert sum(len(g["params"]) for g in groups) == len(lrs)
    assert len({round(g["lr"], 12) for g in groups}) == (2 if decay is None else 4)  # layer 1 = pooler rate
