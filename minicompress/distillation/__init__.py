"""Knowledge distillation: losses that pull a small student towards a large teacher, and the
trainer and schemes that use them.

Losses. Each is a plain function of tensors, student tensor(s) first, then teacher tensor(s),
then labels or indices where the method needs them, hyperparameters as keywords with the
paper's defaults. Each returns only its own term, a scalar averaged over the batch; the
cross-entropy and the weights between terms belong to the trainer. Teacher tensors are
detached inside every loss.

    logit          kd_loss (Hinton KD: τ² · KL(p_t^τ ‖ p_s^τ), 'batchmean'), dkd_loss,
                   logit_std_kd_loss
    dist           dist_loss
    teacher_free   label_smoothing_loss, tf_kd_self_loss, tf_kd_virtual_loss

Training. `Distiller` trains a student against a frozen teacher with any weighted sum of the
losses (each a `Term`) and cross-entropy, through `train.fit`; `FeatureTaps` names the layers
a term compares by module path; the schemes arrange several networks around the same losses.

    taps           FeatureTaps, channel_adapter
    distiller      Term, Distiller
    schemes        mutual_learning (mutual_losses), born_again, teacher_assistant,
                   NoisyTeacher (perturb_logits), Ensemble (ensemble_probabilities)
"""

# --- losses -----------------------------------------------------------------------------------
from .dist import dist_loss
from .logit import dkd_loss, kd_loss, logit_std_kd_loss
from .teacher_free import label_smoothing_loss, tf_kd_self_loss, tf_kd_virtual_loss

# --- training: taps, Distiller, schemes ----------------------------------------------------------
from .distiller import Distiller, Term
from .schemes import (
    Ensemble,
    NoisyTeacher,
    born_again,
    ensemble_probabilities,
    mutual_learning,
    mutual_losses,
    perturb_logits,
    teacher_assistant,
)
from .taps import FeatureTaps, channel_adapter

__all__ = [
    # losses
    "kd_loss",
    "dkd_loss",
    "dist_loss",
    "logit_std_kd_loss",
    "label_smoothing_loss",
    "tf_kd_self_loss",
    "tf_kd_virtual_loss",
    # training: taps, Distiller, schemes
    "FeatureTaps",
    "channel_adapter",
    "Term",
    "Distiller",
    "mutual_losses",
    "mutual_learning",
    "born_again",
    "teacher_assistant",
    "perturb_logits",
    "NoisyTeacher",
    "ensemble_probabilities",
    "Ensemble",
]
