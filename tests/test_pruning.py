import pytest
import torch

import workbench as wb
from workbench.pruning import apply_masks, nm_masks, sparsity_table, unstructured_masks


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return wb.create_task("ic-resnet8").create_model().eval()


def test_two_four_masks_zero_exactly_two_of_every_four(resnet):
    masks = nm_masks(resnet, 2, 4)
    assert set(masks) == set(wb.quantisable_layers(resnet))
    pruned = apply_masks(resnet, masks)
    for name, mask in masks.items():
        w = pruned.get_submodule(name).weight.detach().reshape(mask.shape[0], -1)
        full = w.shape[1] - w.shape[1] % 4
        groups = w[:, :full].reshape(w.shape[0], -1, 4)
        assert ((groups == 0).sum(-1) == 2).all(), name
        # the two kept are the two largest of each group in the original weights
        orig = resnet.get_submodule(name).weight.detach().reshape(mask.shape[0], -1)[:, :full].reshape(w.shape[0], -1, 4).abs()
        kept = orig * (groups != 0)
        assert (kept.max(-1).values == orig.max(-1).values).all()


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_global_unstructured_sparsity_hits_its_level(resnet, sparsity):
    pruned = apply_masks(resnet, unstructured_masks(resnet, sparsity, scope="global"))
    table = sparsity_table(pruned)
    total = table["weights"].sum()
    assert abs(table["zeros"].sum() - sparsity * total) <= 1
    assert table["sparsity"].std() > 0  # one threshold: layers end up at different levels
    assert (table["dense_bytes"] == 4 * table["weights"]).all()  # honest: masks do not shrink tensors


def test_per_layer_unstructured_sparsity(resnet):
    table = sparsity_table(apply_masks(resnet, unstructured_masks(resnet, 0.5, scope="layer")))
    assert ((table["zeros"] - 0.5 * table["weights"]).abs() <= 1).all()


def test_input_model_unchanged_and_bad_input(resnet):
    before = resnet.stem[0].weight.clone()
    apply_masks(resnet, unstructured_masks(resnet, 0.5))
    assert torch.equal(before, resnet.stem[0].weight)
    for bad in (1.0, -0.1, 1.5, "half", True):
        with pytest.raises(wb.SpecError, match=r"sparsity: expected a value in \[0, 1\)"):
            unstructured_masks(resnet, bad)
    with pytest.raises(wb.SpecError, match="0 < n < m"):
        nm_masks(resnet, 4, 4)
    with pytest.raises(wb.SpecError, match="layers.stack1.conv3: no such prunable layer; closest: stack1.conv2"):
        unstructured_masks(resnet, 0.5, layers=["stack1.conv3"])
