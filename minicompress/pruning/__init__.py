"""Pruning: fine-grained masks (unstructured, N:M, schedules, lottery tickets, pruning at
initialization) and structured channel pruning with real model surgery (criteria, Network
Slimming and its YOLO-lineage variants).

Words used with one meaning throughout: a *layer* is a module with weights (a conv, a Linear,
a BatchNorm or LayerNorm), so scope="layer" means each layer (or channel group) on its own and
`layer_keep` what each layer keeps; a *unit* is a residual block x + f(x), which the slimming
variant the YOLO repositories call "layer" removes whole (`unit_removal`); a *group* is a set
of channels that must be removed together (`dependency`).

Fine-grained masks (weights keep their shape; pruned entries are held at zero by a
`torch.nn.utils.parametrize` mask, so training, `state_dict` and optimizers work unchanged):

    masks          Mask, prunable_layers, apply_mask, get_mask, is_pruned, sparsity, make_permanent
    unstructured   prune_unstructured (magnitude / random, global / layer), prune_by_scores,
                   prune_to_sparsity
    ln_structured  prune_ln_structured (whole rows / filters by Ln norm, still masks)
    n_m            n_m_mask, prune_n_m (N:M semi-structured, 2:4 for sparse tensor cores)
    sensitivity    sensitivity_scan (accuracy against sparsity, one layer at a time)
    schedules      prune_iteratively, polynomial_sparsity, GradualPruning (a train.fit callback)
    lottery        find_ticket (iterative magnitude pruning with rewinding), reinitialize
    at_init        snip_scores, grasp_scores, synflow_scores, prune_snip, prune_grasp,
                   prune_synflow

Structured pruning (a new, physically smaller model of the same class; the caller's model is
never modified; any model torch.fx can trace):

    dependency     build_dependency_graph -> DependencyGraph of coupled ChannelGroups
    channel_roles  the table of what each op does to channels (graph_ops is its former name);
                   flow_rules, shape_rules: how channels flow through each role
    layer_kinds    the table of layer kinds (conv, grouped, depthwise, linear, BatchNorm,
                   LayerNorm): how each couples, is cut, and takes part in compensation
    criteria       channel_scores picks one core: l1_scores, l2_scores, bn_scale_scores,
                   taylor_scores, fpgm_scores, random_scores
    structured     prune_channels, prune_channels_to_macs
    channel_selection   select_channels (keep masks from scores)
    recalibration  recalibrate_batchnorm (EagleEye: BatchNorm statistics after pruning)
    surgery        remove_channels: cut channels out of every coupled tensor
    compensation   channel_constants, fold_offsets: the activation-offset fold (Ye et al. 2018)
    bn_sparsity    BNSparsity: sparsity training on BatchNorm scales (a train.fit callback)
    slimming       slim / plan_slim / apply_plan, percent_for_macs
    slim_variants  one plan function per variant: normal_plan, shortcut_plan, slim_plan,
                   regular_plan, layer_plan, layer_channel_plan
    unit_removal   residual_units, remove_units (whole residual blocks; layer_pruning is its
                   former name)
"""

from .at_init import (
    grasp_scores,
    prune_grasp,
    prune_snip,
    prune_synflow,
    snip_scores,
    synflow_scores,
)
from .lottery import find_ticket, reinitialize
from .masks import (
    Mask,
    apply_mask,
    get_mask,
    is_pruned,
    make_permanent,
    prunable_layers,
    sparsity,
)
from .n_m import n_m_mask, prune_n_m
from .schedules import GradualPruning, polynomial_sparsity, prune_iteratively
from .sensitivity import sensitivity_scan
from .unstructured import prune_by_scores, prune_to_sparsity, prune_unstructured
from .ln_structured import prune_ln_structured
from .criteria import (
    CRITERIA,
    bn_scale_scores,
    channel_scores,
    fpgm_scores,
    l1_scores,
    l2_scores,
    random_scores,
    taylor_scores,
)
from .dependency import ChannelGroup, DependencyGraph, build_dependency_graph
from .unit_removal import remove_units, residual_units
from .bn_sparsity import BNSparsity
from .slimming import (
    VARIANTS,
    SlimPlan,
    apply_plan,
    percent_for_macs,
    plan_slim,
    slim,
)
from .slim_variants import (
    layer_channel_plan,
    layer_plan,
    normal_plan,
    regular_plan,
    shortcut_plan,
    slim_plan,
)
from .structured import (
    prune_channels,
    prune_channels_to_macs,
    recalibrate_batchnorm,
    select_channels,
)
from .compensation import channel_constants
from .surgery import remove_channels
