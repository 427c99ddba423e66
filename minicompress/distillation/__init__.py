"""Knowledge distillation: losses that pull a small student towards a large teacher, and the
trainer and schemes that use them.

Losses. Each is a plain function of tensors, student tensor(s) first, then teacher tensor(s),
then labels or indices where the method needs them, hyperparameters as keywords with the
paper's defaults. Each returns only its own term, a scalar averaged over the batch; the
cross-entropy and the weights between terms belong to the trainer. Teacher tensors are
detached inside every loss.

    logit          kd_loss (Hinton KD: τ² · KL(p_t^τ ‖ p_s^τ), 'batchmean')
"""

# --- losses -----------------------------------------------------------------------------------
from .logit import kd_loss

__all__ = [
    # losses
    "kd_loss",
]
