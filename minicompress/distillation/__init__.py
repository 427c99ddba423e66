"""Knowledge distillation: losses that pull a small student towards a large teacher, and the
trainer and schemes that use them.

Losses. Each is a plain function of tensors, student tensor(s) first, then teacher tensor(s),
then labels or indices where the method needs them, hyperparameters as keywords with the
paper's defaults. Each returns only its own term, a scalar averaged over the batch; the
cross-entropy and the weights between terms belong to the trainer. Teacher tensors are
detached inside every loss (except CRD's teacher embeddings, the output of a learned head).

    logit          kd_loss (Hinton KD: τ² · KL(p_t^τ ‖ p_s^τ), 'batchmean'), dkd_loss,
                   logit_std_kd_loss
    dist           dist_loss
    teacher_free   label_smoothing_loss, tf_kd_self_loss, tf_kd_virtual_loss
    feature        at_loss (mode "code" or "paper"), fsp_loss, nst_loss: no learned parts
    hint           fitnet_loss + HintRegressor, ab_loss + Connector (student-side adapters)
    factor_transfer  ft_loss + Paraphraser (teacher side) and Translator (student side)
    vid            vid_loss + VIDRegressor (the Gaussian's mean and per-channel variance)
    relational     rkd_distance_loss, rkd_angle_loss, sp_loss, pkt_loss, cc_loss
    contrastive    crd_loss + CRDEmbed (one head per network) and ContrastMemory (the bank)

Learned parts (regressors, connectors, paraphraser, translator, embedding heads, memory) are
small `nn.Module`s beside their loss: train them with the student (give their parameters to
the optimizer) and leave them out of the deployed student. Every loss validates its inputs
(TypeError for the wrong kind, ValueError for a wrong value, naming the argument).
"""

# --- losses: begin ----------------------------------------------------------------------------
from .contrastive import ContrastMemory, CRDEmbed, crd_loss
from .dist import dist_loss
from .factor_transfer import Paraphraser, Translator, ft_loss
from .feature import at_loss, fsp_loss, nst_loss
from .hint import Connector, HintRegressor, ab_loss, fitnet_loss
from .logit import dkd_loss, kd_loss, logit_std_kd_loss
from .relational import cc_loss, pkt_loss, rkd_angle_loss, rkd_distance_loss, sp_loss
from .teacher_free import label_smoothing_loss, tf_kd_self_loss, tf_kd_virtual_loss
from .vid import VIDRegressor, vid_loss

# --- losses: end ------------------------------------------------------------------------------

__all__ = [
    # losses
    "kd_loss",
    "dkd_loss",
    "dist_loss",
    "logit_std_kd_loss",
    "label_smoothing_loss",
    "tf_kd_self_loss",
    "tf_kd_virtual_loss",
    "at_loss",
    "fsp_loss",
    "nst_loss",
    "fitnet_loss",
    "HintRegressor",
    "ab_loss",
    "Connector",
    "ft_loss",
    "Paraphraser",
    "Translator",
    "vid_loss",
    "VIDRegressor",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "sp_loss",
    "pkt_loss",
    "cc_loss",
    "crd_loss",
    "CRDEmbed",
    "ContrastMemory",
    # end of losses
]
