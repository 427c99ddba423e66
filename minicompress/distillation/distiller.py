"""`Distiller`: train a student against a frozen teacher with any weighted sum of losses.

Offline distillation as Hinton, Vinyals, Dean set it up ("Distilling the Knowledge in a Neural
Network", NIPS 2014 Deep Learning Workshop, arXiv:1503.02531): the teacher is trained first
and frozen, the student minimises

    L = w_ce · CE(z_s, y) + Σ_k w_k · loss_k(student tensors, teacher tensors[, y][, index])

where each term compares tensors of the two networks: the logits (KD, DKD, DIST), tapped
feature maps (FitNets, AT), embeddings (RKD, PKT, CRD). A term names what it compares:

    Term(kd_loss, 0.9, options={"temperature": 4.0})                  logits vs logits
    Term(at_loss, 1000.0, student="layer3", teacher="layer4")         one pair of taps
    Term(at_loss, 1000.0, pairs=[("layer2", "layer3"), ("layer3", "layer4")])  summed
    Term(fitnet_loss, 1.0, student="features.8", teacher="layer3", adapter=True)
    Term(rkd_distance_loss, 25.0, student="classifier:input", teacher="fc:input")

In five lines:

    from minicompress.distillation import Distiller, Term, kd_loss
    terms = [Term(kd_loss, 0.9, options={"temperature": 4.0})]
    history = Distiller(teacher, student, terms, w_ce=0.1).fit(train_loader, epochs=10)

Entry points: `Term`, `Distiller` (`fit`, `parameters`). Training runs through `train.fit`
(its tqdm bar, callbacks and schedules); the returned history adds one list per term (its
unweighted value averaged over each epoch) and "ce" to fit's "loss" and "accuracy".

Conventions (anchors differ, kd_anchors §3.1): the teacher runs in eval mode under
`torch.no_grad()` (BatchNorm running statistics, no dropout, no graph), so its parameters
never reach the optimizer; learned parts of terms (adapters, a loss `nn.Module`, modules
passed as options) join the optimizer with the student and are not part of it afterwards.
"""

import copy
import inspect
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .. import train
from .._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_module,
    check_real,
    first_batch,
)
from .taps import FeatureTaps, channel_adapter

__all__ = ["Term", "Distiller", "IndexedDataset"]

# History keys fit already uses, and the cross-entropy's: no term may take them.
_RESERVED = ("loss", "accuracy", "ce")


class Term:
    """One weighted distillation term: a loss, the tensors it compares, its hyperparameters.

    The loss is called as `loss(*student_tensors, *teacher_tensors, [targets], [index],
    **options)`: student tensors first, then teacher tensors, then the labels if the loss has
    a parameter named `targets`, then the sample indices if it has one named `index` (the
    loader must then yield (inputs, targets, index): see `IndexedDataset`).

    Args:
        loss: a loss function of tensors, or an `nn.Module` (its parameters are trained).
        weight: w_k >= 0, the term's weight in the total.
        student: what the student contributes: None for its logits, a tap path ("layer3",
            "fc:input"; see `taps`), a tuple of paths for a loss of several tensors, or ()
            for nothing (label smoothing needs no teacher, say). Default None.
        teacher: the same for the teacher. Default None (the logits).
        pairs: instead of `student` and `teacher`, a list of (student path, teacher path);
            the loss is applied to each pair and the values summed (AT over three stages).
        options: dict of keyword hyperparameters for the loss, checked against its
            signature: {"temperature": 4.0}. `nn.Module` values (a memory bank, a critic)
            are trained with the student.
        adapter: False; True for a `channel_adapter` from the student's channel count to the
            teacher's, built at the first batch and trained with the student (one per pair);
            or an `nn.Module` (a list of them with `pairs`) applied to the student's tensor
            (a `HintRegressor`, a `CRDEmbed` head). An adapter that returns a tuple gives the
            loss several tensors (`VIDRegressor`: mean and variance).
        teacher_adapter: None, or an `nn.Module` (one per pair) applied to the teacher's
            tensor and trained with the student: CRD's teacher-side embedding head. The
            teacher's tensor itself carries no gradient. A frozen one (no parameter requires
            grad: FT's trained paraphraser) keeps its train/eval mode.
        name: the key of the term in the history; default the loss's name without "_loss".

    Raises:
        TypeError: a loss that is not callable, options that are not a dict, an adapter of
            the wrong kind.
        ValueError: a weight < 0, NaN or inf; an option the loss does not take; a
            temperature option <= 0; pairs given with student or teacher; an adapter with
            a loss of several tensors; a reserved name ("loss", "accuracy", "ce").
    """

    def __init__(
        self,
        loss,
        weight,
        student=None,
        teacher=None,
        pairs=None,
        options=None,
        adapter=False,
        teacher_adapter=None,
        name=None,
    ):
        self.loss = check_callable(loss, "loss")
        self.name = _term_name(loss) if name is None else name
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        if self.name in _RESERVED:
            raise ValueError(
                f"a term may not be called {self.name!r} (reserved for the history); "
                "pass name=..."
            )
        self.weight = check_real(weight, f"weight of term {self.name!r}", low=0)
        if pairs is not None:
            if student is not None or teacher is not None:
                raise ValueError(
                    "give either pairs or student/teacher, not both: pairs lists "
                    "(student path, teacher path) for each call of the loss"
                )
            self.calls = tuple(_pair(item) for item in pairs)
            if not self.calls:
                raise ValueError("pairs must hold at least one (student, teacher) pair")
        else:
            self.calls = ((_side(student, "student"), _side(teacher, "teacher")),)
        self.options = dict(_check_options(options))
        self.takes_targets, self.takes_index = _check_signature(
            loss, self.name, self.calls[0], self.options
        )
        if (
            "temperature" in self.options
        ):  # the one hyperparameter every logit loss shares
            check_real(self.options["temperature"], "temperature", low=0, low_open=True)
        self.adapter = _check_adapter(adapter, self.calls, "adapter")
        self.teacher_adapter = _check_adapter(
            False if teacher_adapter is None else teacher_adapter,
            self.calls,
            "teacher_adapter",
        )

    @property
    def paths(self):
        """(student paths, teacher paths) the term taps; None stands for the logits."""
        return (
            tuple(p for s, _ in self.calls for p in s),
            tuple(p for _, t in self.calls for p in t),
        )

    def __repr__(self):
        def side(paths):
            return ", ".join("logits" if p is None else p for p in paths) or "-"

        calls = " + ".join(f"({side(s)} | {side(t)})" for s, t in self.calls)
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        adapters = "".join(
            f", {which}"
            for which in ("adapter", "teacher_adapter")
            if getattr(self, which) is not False
        )
        return f"{self.weight:g}·{self.name}{calls}{options}{adapters}"


class Distiller:
    """Train `student` against a frozen `teacher`: w_ce · CE + Σ_k w_k · term_k.

    Hinton, Vinyals, Dean, arXiv:1503.02531 (offline KD); the terms can be any of the
    package's logit, feature, relational or contrastive losses (see `Term`).

    Args:
        teacher: the trained teacher, an `nn.Module` returning (B, C) logits. It is switched
            to eval mode (with a warning if it was training) and always run under no_grad.
        student: the `nn.Module` to train, returning (B, C) logits; trained in place.
        terms: a `Term` or a list of them.
        w_ce: weight >= 0 of the cross-entropy with the labels, at τ = 1. Default 1.0; Hinton
            et al. found a considerably lower weight than the soft term's best, and
            RepDistiller's KD runs use 0.1 with 0.9 on KD.

    Raises:
        TypeError: teacher or student not an `nn.Module`, terms not `Term`s.
        ValueError: the teacher and student are the same object; w_ce < 0; two terms with
            one name; a tap path that names no module (the message lists the closest names).

    Example:
        >>> import torch; from minicompress.distillation import Distiller, Term, kd_loss
        >>> teacher, student = torch.nn.Linear(4, 3).eval(), torch.nn.Linear(4, 3)
        >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> history = Distiller(teacher, student, Term(kd_loss, 0.9), w_ce=0.1).fit(
        ...     batches, epochs=2, progress=False)
        >>> sorted(history), len(history["kd"])
        (['accuracy', 'ce', 'kd', 'loss'], 2)
    """

    def __init__(self, teacher, student, terms, w_ce=1.0):
        self.teacher = check_module(teacher, "teacher")
        self.student = check_module(student, "student")
        if teacher is student:
            raise ValueError(
                "teacher and student are the same module; distil from a frozen copy "
                "(copy.deepcopy(model)) or use a born-again / self-distillation scheme"
            )
        terms = (terms,) if isinstance(terms, Term) else tuple(terms)
        for term in terms:
            if not isinstance(term, Term):
                raise TypeError(
                    f"terms must hold Term objects, got {type(term).__name__}"
                )
        names = [term.name for term in terms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"two terms are called {repeated[0]!r}; give each its own name=..."
            )
        self.terms = terms
        self.w_ce = check_real(w_ce, "w_ce", low=0)
        student_paths = sorted({p for t in terms for p in t.paths[0] if p is not None})
        teacher_paths = sorted({p for t in terms for p in t.paths[1] if p is not None})
        FeatureTaps(student, student_paths)  # checks the paths now; hooks only in fit
        FeatureTaps(teacher, teacher_paths)
        self._paths = student_paths, teacher_paths
        # {term name: {"student": ModuleList, "teacher": ModuleList}}, built at the first batch
        self.adapters = None

    def parameters(self):
        """The student's parameters, then those of the terms' learned parts (adapters, loss
        modules, modules given as options): what an optimizer must hold."""
        yield from self.student.parameters()
        for module in self._learned_modules():
            yield from module.parameters()

    def fit(
        self,
        train_loader,
        epochs,
        lr=None,
        optimizer=None,
        device=None,
        progress=True,
        callbacks=(),
        schedule="constant",
    ):
        """Distil for `epochs` passes over `train_loader` with `train.fit`.

        The first batch runs once through both networks before anything changes, to check
        the class counts, build adapters and try every term; an error then leaves the
        models as they were.

        Args:
            train_loader: iterable of (inputs, targets) batches, or (inputs, targets, index)
                for a term that takes sample indices.
            epochs, lr, device, progress, callbacks, schedule: as in `train.fit`
                (default optimizer Adam at `lr`, 1e-3 if None, over `parameters()`).
            optimizer: an optimizer over the student's parameters; the learned parts of
                the terms join it as a new parameter group at its default rate.

        Returns:
            `train.fit`'s history ("loss" the weighted total, "accuracy") plus, per epoch,
            "ce" and each term's unweighted value, averaged over the samples.

        Raises:
            ValueError: teacher and student logits of different shapes where a term
                compares logits; a tapped module that does not run, or runs more than once,
                in a forward pass; a term that fails on the first batch (the message names
                the term and the shapes of its tensors); bad epochs, lr, schedule or
                lr together with an optimizer.
        """
        epochs = check_int(epochs, "epochs", low=0)
        if lr is not None:
            lr = check_real(lr, "lr", low=0, low_open=True)
            if optimizer is not None:
                raise ValueError(
                    "pass either optimizer or lr, not both: lr only configures the "
                    "default Adam optimizer"
                )
        check_choice(schedule, "schedule", ("constant", "onecycle"))
        check_bool(progress, "progress")
        device = train.resolve_device(device, self.student)
        batch = first_batch(train_loader, "train_loader")
        self.student.to(device)
        self.teacher.to(device)
        # 1. compute: one batch through both networks, every term tried on it
        adapters = self._first_batch(batch, device)
        # 2. commit
        if self.teacher.training:
            warnings.warn(
                f"the teacher ({type(self.teacher).__name__}) was in training mode; "
                "Distiller switched it to eval mode so that BatchNorm uses its running "
                "statistics and dropout is off. Call teacher.eval() first to silence this.",
                UserWarning,
                stacklevel=2,
            )
            self.teacher.eval()
        if self.adapters is None:
            self.adapters = adapters
        for module in self._learned_modules():
            # A frozen part (FT's trained paraphraser: no parameter requires grad) keeps its
            # mode, so that its BatchNorm goes on using the statistics it was trained with.
            parameters = list(module.parameters())
            frozen = bool(parameters) and not any(p.requires_grad for p in parameters)
            module.to(device)
            if not frozen:
                module.train()
        if optimizer is None:
            optimizer = torch.optim.Adam(
                self.parameters(), lr=1e-3 if lr is None else lr
            )
        else:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            extra = [p for p in self.parameters() if id(p) not in held]
            if extra:
                optimizer.add_param_group({"params": extra})
        log = _TermLog(["ce", *(t.name for t in self.terms)])
        student_paths, teacher_paths = self._paths
        with (
            FeatureTaps(self.student, student_paths) as s_taps,
            FeatureTaps(self.teacher, teacher_paths) as t_taps,
        ):

            def loss_fn(outputs, targets, inputs, *extra):
                with torch.no_grad():
                    teacher_logits = self.teacher(inputs)
                index = extra[0] if extra else None
                values = {"ce": F.cross_entropy(outputs, targets)}
                total = self.w_ce * values["ce"]
                for term in self.terms:
                    values[term.name] = _term_value(
                        term,
                        self.adapters[term.name],
                        (outputs, s_taps),
                        (teacher_logits, t_taps),
                        targets,
                        index,
                    )
                    total = total + term.weight * values[term.name]
                log.add(values, len(targets))
                return total

            history = train.fit(
                self.student,
                train_loader,
                epochs,
                optimizer=optimizer,
                loss_fn=loss_fn,
                device=device,
                progress=progress,
                callbacks=[*callbacks, log],
                schedule=schedule,
                loss_inputs=True,
            )
        history.update(log.history)
        return history

    def __repr__(self):
        terms = " + ".join([f"{self.w_ce:g}·ce", *map(repr, self.terms)])
        return f"Distiller({type(self.teacher).__name__} -> {type(self.student).__name__}: {terms})"

    # ------------------------------------------------------------------------------------

    def _learned_modules(self):
        for term in self.terms:
            if isinstance(term.loss, nn.Module):
                yield term.loss
            yield from (v for v in term.options.values() if isinstance(v, nn.Module))
            if self.adapters is not None:
                yield from self.adapters[term.name].values()

    def _first_batch(self, batch, device):
        # Every check that needs tensors, on one batch, in eval mode under no_grad: nothing
        # about either model changes (no BatchNorm statistics, no gradients, no state).
        inputs, targets, *extra = batch
        inputs, targets = inputs.to(device), targets.to(device)
        index = extra[0].to(device) if extra else None
        # Every submodule's own flag: a caller may keep some (a frozen BatchNorm) in eval.
        modes = [
            (m, m.training)
            for net in (self.student, self.teacher)
            for m in net.modules()
        ]
        student_paths, teacher_paths = self._paths
        try:
            self.student.eval(), self.teacher.eval()
            with (
                torch.no_grad(),
                FeatureTaps(self.student, student_paths) as s_taps,
                FeatureTaps(self.teacher, teacher_paths) as t_taps,
            ):
                student_logits = self.student(inputs)
                teacher_logits = self.teacher(inputs)
                _check_logits(student_logits, teacher_logits, self.terms)
                for taps in (s_taps, t_taps):
                    _check_ran_once(taps)
                adapters = nn.ModuleDict()
                for term in self.terms:
                    if self.adapters is not None:
                        built = self.adapters[term.name]
                    else:
                        built = nn.ModuleDict(
                            {
                                "student": _build_adapters(term, s_taps, t_taps),
                                "teacher": nn.ModuleList(term.teacher_adapter or ()),
                            }
                        )
                    adapters[term.name] = built
                    if term.takes_index and index is None:
                        raise ValueError(
                            f"term {term.name!r} takes sample indices (its loss has an "
                            "'index' parameter): the loader must yield (inputs, targets, "
                            "index) batches"
                        )
                    _try_term(
                        term,
                        built,
                        (student_logits, s_taps),
                        (teacher_logits, t_taps),
                        targets,
                        index,
                        device,
                    )
        finally:
            for module, training in modes:
                module.training = training
        return adapters


class IndexedDataset(torch.utils.data.Dataset):
    """`dataset`'s items with their position appended: (input, target, index).

    Contrastive distillation keeps one memory entry per training sample, so its loss needs
    each sample's index (Tian et al., arXiv:1910.10699); wrap the training set and the loader
    yields (inputs, targets, index) batches.

    Example:
        >>> data = IndexedDataset([("a", 0), ("b", 1)])
        >>> data[1]
        ('b', 1, 1)
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return (*self.dataset[index], index)


# ---------------------------------------------------------------------------------------------


class _TermLog:
    """Per-epoch means of each term's unweighted value: an `after_epoch` callback for fit."""

    def __init__(self, names):
        self.history = {name: [] for name in names}
        self._sums, self._seen = dict.fromkeys(names, 0.0), 0

    def add(self, values, batch_size):
        for name, value in values.items():
            self._sums[name] += (
                value.detach() * batch_size
            )  # a tensor: no sync per batch
        self._seen += batch_size

    def after_epoch(self, model, epoch):
        for name, total in self._sums.items():
            self.history[name].append(float(total) / max(self._seen, 1))
        self._sums, self._seen = dict.fromkeys(self._sums, 0.0), 0


def _term_value(term, adapters, student, teacher, targets, index):
    # Σ over the term's calls of loss(*student tensors, *teacher tensors, [y], [index], **opts)
    total = 0.0
    for i, (s_paths, t_paths) in enumerate(term.calls):
        s_tensors = [_tensor(p, *student) for p in s_paths]
        t_tensors = [_tensor(p, *teacher) for p in t_paths]
        for tensors, side in (
            (s_tensors, adapters["student"]),
            (t_tensors, adapters["teacher"]),
        ):
            if len(side):
                mapped = side[i](tensors[0])  # a tuple gives the loss several tensors
                tensors[:1] = mapped if isinstance(mapped, tuple) else [mapped]
        extra = [targets] * term.takes_targets + [index] * term.takes_index
        total = total + term.loss(*s_tensors, *t_tensors, *extra, **term.options)
    return total


def _tensor(path, logits, taps):
    return logits if path is None else taps[path]


def _try_term(term, adapters, student, teacher, targets, index, device):
    # Run the term on copies of its learned parts (a memory bank must not see this batch).
    trial = copy.deepcopy(term)
    trial.loss = (
        trial.loss.to(device) if isinstance(trial.loss, nn.Module) else trial.loss
    )
    for key, value in trial.options.items():
        if isinstance(value, nn.Module):
            trial.options[key] = value.to(device)
    try:
        value = _term_value(
            trial, copy.deepcopy(adapters).to(device), student, teacher, targets, index
        )
    except Exception as error:
        shapes = _shapes(term, student, teacher)
        hint = ""
        if term.adapter is False and "shape" in str(error).lower():
            hint = " If only the channel counts differ, pass adapter=True."
        raise ValueError(
            f"term {term.name!r} failed on the first batch with tensors {shapes}: "
            f"{type(error).__name__}: {error}.{hint}"
        ) from error
    if not (isinstance(value, torch.Tensor) and value.dim() == 0):
        raise ValueError(
            f"term {term.name!r} must return a scalar tensor, got "
            f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
        )


def _shapes(term, student, teacher):
    def shape(path, logits, taps):
        value = _tensor(path, logits, taps)
        return (
            tuple(value.shape)
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )

    parts = []
    for s_paths, t_paths in term.calls:
        s = ", ".join(f"student {p or 'logits'} {shape(p, *student)}" for p in s_paths)
        t = ", ".join(f"teacher {p or 'logits'} {shape(p, *teacher)}" for p in t_paths)
        parts.append("; ".join(x for x in (s, t) if x))
    return " | ".join(parts)


def _build_adapters(term, s_taps, t_taps):
    # The student-side adapters: given modules, or channel adapters sized by this batch.
    if term.adapter is False:
        return nn.ModuleList()
    if term.adapter is not True:
        return nn.ModuleList(term.adapter)
    adapters = []
    for i, ((s_path,), (t_path,)) in enumerate(term.calls):
        s, t = s_taps[s_path], t_taps[t_path]
        try:
            adapters.append(channel_adapter(s.shape, t.shape, seed=i))
        except ValueError as error:
            raise ValueError(
                f"term {term.name!r}: student {s_path!r} and teacher {t_path!r} have "
                f"incompatible shapes for an adapter: {error}"
            ) from None
    return nn.ModuleList(adapters)


def _check_logits(student_logits, teacher_logits, terms):
    for which, logits in (("student", student_logits), ("teacher", teacher_logits)):
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            got = (
                tuple(logits.shape)
                if isinstance(logits, torch.Tensor)
                else type(logits)
            )
            raise ValueError(
                f"the {which} must return (B, C) logits, got {got}; wrap a model that "
                "returns a tuple or dict so that forward returns the logits"
            )
    uses_logits = any(None in paths for t in terms for paths in t.paths)
    if uses_logits and student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher and student logits differ: teacher {tuple(teacher_logits.shape)}, "
            f"student {tuple(student_logits.shape)}. A logit term compares class "
            "distributions, so both must predict the same classes: build the student "
            f"with num_classes={teacher_logits.shape[1]}"
        )


def _check_ran_once(taps):
    for path, calls in taps.calls.items():
        if calls != 1:
            how = "did not run" if calls == 0 else f"ran {calls} times"
            raise ValueError(
                f"tapped module {path.split(':')[0]!r} of {type(taps.model).__name__} {how} "
                "in one forward pass; tap a module that runs exactly once (a module "
                "object reused at several places, such as a shared nn.ReLU, cannot be "
                "told apart)"
            )


def _term_name(loss):
    name = getattr(loss, "__name__", None) or type(loss).__name__.lower()
    return name.removesuffix("_loss").removesuffix("loss") or name


def _side(paths, which):
    if paths is None:
        return (None,)
    if isinstance(paths, str):
        return (paths,)
    try:
        paths = tuple(paths)
    except TypeError:
        raise TypeError(
            f"{which} must be None (the logits), a tap path, or a tuple of paths; "
            f"got {type(paths).__name__}"
        ) from None
    for path in paths:
        if not isinstance(path, str):
            raise TypeError(f"{which} must hold tap paths (str), got {path!r}")
    return paths


def _pair(item):
    try:
        s, t = item
    except (TypeError, ValueError):
        raise TypeError(
            f"pairs must hold (student path, teacher path) pairs, got {item!r}"
        ) from None
    return _side(s, "student"), _side(t, "teacher")


def _check_options(options):
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict of keyword arguments, got {options!r}")
    return options


def _check_signature(loss, name, call, options):
    # The loss must accept this term's tensors, targets / index if it names them, and the
    # options as keywords: a misspelt option is an error here, never silently dropped.
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):  # a builtin without a signature: trust the caller
        return False, False
    takes_targets, takes_index = "targets" in parameters, "index" in parameters
    tensors = len(call[0]) + len(call[1]) + takes_targets + takes_index
    try:  # bind_partial: an adapter may turn one tensor into several (VID's mean, variance)
        inspect.signature(loss).bind_partial(*[None] * tensors, **options)
    except TypeError as error:
        keywords = [
            p.name
            for p in list(parameters.values())[tensors:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise ValueError(
            f"term {name!r}: {_term_name(loss)} cannot take {tensors} tensor argument(s) "
            f"and options {sorted(options)} ({error}); its options are: "
            f"{', '.join(keywords) or 'none'}"
        ) from None
    return takes_targets, takes_index


def _check_adapter(adapter, calls, which):
    if adapter is False:
        return False
    if adapter is not True or which == "teacher_adapter":
        modules = [adapter] if isinstance(adapter, nn.Module) else list(adapter)
        if len(modules) != len(calls) or not all(
            isinstance(m, nn.Module) for m in modules
        ):
            kinds = (
                "an nn.Module"
                if which == "teacher_adapter"
                else "True, False, an nn.Module"
            )
            raise TypeError(
                f"{which} must be {kinds}, or one nn.Module per pair; got {adapter!r}"
            )
    side = 0 if which == "adapter" else 1
    for paths in calls:
        if len(paths[side]) != 1 or (adapter is True and None in paths[0]):
            raise ValueError(
                f"an {which} maps one tensor of its network; this term compares "
                f"{paths[0]} with {paths[1]}"
                + (
                    " (adapter=True needs a tapped layer, not the logits)"
                    if adapter is True
                    else ""
                )
            )
    return adapter if adapter is True else modules
