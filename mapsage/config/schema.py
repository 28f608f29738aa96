"""The typed config tree. Every number of the training plan is a key here; templates under ``configs/`` set them.

Sections: ``stage``, ``dataset``, ``model``, ``loss``, ``augment``, ``train``, ``eval``, ``infer``, ``tta_ab``,
``post``, ``ensemble``, ``refine``, ``distill``, ``health``, ``runtime``. Only ``dataset`` is required; everything
else has the plan's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..corruption_levels import CORRUPTIONS, MAX_SEVERITY
from ..metric_names import SELECTABLE, SWEEP_METRICS, SWEEP_METRICS_CLS, SWEEP_METRICS_SEG
from ..registries import ARCH_NAMES, LOSS_TERMS, STAGE_KINDS, SWEEP_PRUNERS, SWEEP_SAMPLERS

StageKind = Literal[STAGE_KINDS]        # the registry: mapsage/registries.py (runners/stages.py runs each one)


@dataclass
class StageCfg:
    kind: StageKind = "train"
    plan_stage: int = 1                      # 0..4, the column of the plan board
    title: str = ""
    description: str = ""
    name: Optional[str] = None               # explicit run name; default derived from the config
    checkpoint: Optional[str] = None         # evaluate / tta_ab / refine / health: a checkpoint file or a run id
    # internal test hooks of the demo_job stage (runner tests): accepted, but not part of the schema users see
    # (left out of resolved configs at their defaults and of key suggestions; see core.INTERNAL)
    demo_steps: int = field(default=5, metadata={"internal": True})              # steps to run
    demo_step_seconds: float = field(default=0.2, metadata={"internal": True})
    demo_fail_at: Optional[int] = field(default=None, metadata={"internal": True})
    demo_spawn_child: bool = field(default=False, metadata={"internal": True})   # proves cancel ends the group
    demo_ignore_stop: bool = field(default=False, metadata={"internal": True})   # proves SIGKILL after the grace

    def validate(self):
        if not 0 <= self.plan_stage <= 4:
            raise ValueError(f"plan_stage must be 0..4, got {self.plan_stage}")


@dataclass
class SplitCfg:
    method: Literal["official", "by_group", "list"] = "by_group"
    group_regex: str = r"^(?P<group>[^/]+)/"    # applied to the sample id; the named group is the split unit
    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.75, "val": 0.25})
    seed: int = 0
    assign: dict[str, list[str]] = field(default_factory=dict)   # explicit group -> split lists (wins over ratios)
    list_file: Optional[str] = None         # method=list: a file of "sample_id split" lines
    # k-fold cross-validation (by_group): the train+val pool cut into `folds` folds of whole groups, near-duplicate
    # images (pHash/dHash within `near_dup_bits` bits) kept together, stratified by class presence; fold `fold` is
    # the val split, the others train (0: off). `mapsage run --folds K` launches one run per fold.
    folds: int = 0
    fold: int = 0
    near_dup_bits: int = 6

    def validate(self):
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"split.folds must be 0 (off) or at least 2, got {self.folds}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ValueError(f"split.fold must be in 0..{self.folds - 1} (split.folds={self.folds}), got {self.fold}")
        if self.folds and self.method != "by_group":
            raise ValueError(f"split.folds needs split.method: by_group (whole groups per fold), not {self.method!r}")
        if self.method == "by_group" and not self.assign:
            total = sum(self.ratios.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"split.ratios must add up to 1.0, got {total}")


@dataclass
class PartMaskCfg:
    """part_mask datasets (face parsing, CelebAMask-HQ layout): one binary PNG per part per image."""
    dir: str = "masks"                      # folder (relative to dataset.root) searched recursively for part files
    # part name (the file suffix in <image stem>_<part>.png) -> class name, in paint order: a later part paints
    # over an earlier one where both cover a pixel (CelebAMask-HQ: skin first, cloth last)
    parts: dict[str, str] = field(default_factory=dict)
    background: Optional[str] = None        # class of pixels no part covers (null: dataset.classes[0])
    numeric_ids: bool = True                # "00012" in a part file name matches image "12.jpg"


@dataclass
class DatasetCfg:
    name: str = "dataset"
    type: Literal["loveda", "color_mask", "index_mask", "part_mask"] = "color_mask"
    root: str = ""                          # relative paths resolve against the project root
    classes: list[str] = field(default_factory=list)
    palette: list[str] = field(default_factory=list)             # display colour per class, "#RRGGBB"
    ignore_index: int = 255
    # color_mask: mask colour -> class name; colours mapped to ignore explicitly
    color_map: dict[str, str] = field(default_factory=dict)
    ignore_colors: list[str] = field(default_factory=list)
    # index_mask / loveda: raw mask value -> class index; raw values that mean "ignore"
    value_map: dict[int, int] = field(default_factory=dict)
    ignore_values: list[int] = field(default_factory=list)
    # index_mask: masks converted by mmsegmentation with reduce_zero_label (0 = ignore, 1..K = classes 0..K-1)
    reduce_zero_label: bool = False
    part_masks: PartMaskCfg = field(default_factory=PartMaskCfg)
    # folder layout for color_mask / index_mask: glob patterns relative to root
    image_glob: str = "**/images/*.jpg"
    mask_from_image: list[str] = field(default_factory=lambda: ["/images/", "/masks/", ".jpg", ".png"])
    splits: list[str] = field(default_factory=lambda: ["Train", "Val", "Test"])   # loveda: official folders
    domains: list[str] = field(default_factory=lambda: ["Urban", "Rural"])        # loveda: domain folders
    split: SplitCfg = field(default_factory=SplitCfg)
    train_split: str = "train"
    val_split: str = "val"
    test_split: Optional[str] = None
    leak_list: Optional[str] = None         # file of sample ids that must not appear in training (e.g. EarthVQA)
    max_samples: Optional[int] = None       # cap per split (quick runs)
    # reviewers' corrections: train/evaluate on "original + corrections v<label_version>" (null: the original
    # labels); versions live under <labels_root or workspace/labels>/<name>/ (mapsage.analysis.labels)
    label_version: Optional[int] = None
    labels_root: Optional[str] = None

    def validate(self):
        if not self.root:
            raise ValueError("dataset.root must name the dataset folder")
        if not self.classes:
            raise ValueError("dataset.classes must list the class names")
        if self.palette and len(self.palette) != len(self.classes):
            raise ValueError(f"dataset.palette has {len(self.palette)} colours for {len(self.classes)} classes")
        if 0 <= self.ignore_index < len(self.classes):
            raise ValueError(f"ignore_index {self.ignore_index} collides with class id "
                             f"{self.ignore_index} ({self.classes[self.ignore_index]})")
        if self.reduce_zero_label and self.value_map:
            raise ValueError("dataset.reduce_zero_label and dataset.value_map both remap raw values; use one: "
                             "reduce_zero_label for mmseg-converted masks (0 = ignore, 1..K = classes), or a "
                             "value_map that says it in full")
        if self.reduce_zero_label and self.type not in ("index_mask", "loveda"):
            raise ValueError(f"dataset.reduce_zero_label applies to index masks; dataset.type is {self.type}")
        if self.type == "part_mask":
            unknown = sorted({c for c in self.part_masks.parts.values() if c not in self.classes})
            if not self.part_masks.parts:
                raise ValueError("dataset.part_masks.parts is empty: name each part file suffix and its class, "
                                 "in paint order (e.g. {skin: skin, hair: hair})")
            if unknown:
                raise ValueError(f"dataset.part_masks.parts names class(es) {unknown} that are not in "
                                 f"dataset.classes")
            if self.part_masks.background is not None and self.part_masks.background not in self.classes:
                raise ValueError(f"dataset.part_masks.background {self.part_masks.background!r} is not in "
                                 f"dataset.classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class FreezeCfg:
    ratio: float = 0.0                      # share of encoder parameter groups frozen at the start (0.5-0.7 plan)
    unfreeze_every: int = 10                # epochs between unfreezing one more group
    groups: int = 4                         # encoder split into this many groups (stages) for unfreezing


@dataclass
class ModelCfg:
    # dpt: smp's ViT decoder, the architecture for plain-ViT encoders (tu-vit_*_dinov3 and the like)
    arch: Literal[ARCH_NAMES] = "segformer"     # the registry: mapsage/registries.py
    encoder: str = "mit_b2"
    pretrained: str = "none"                # "none" or a local weights file; "imagenet" etc. fail with a hint
    pretrained_min_loaded: float = 0.9      # refuse a checkpoint that fills less than this share of the encoder
    force_pretrained: bool = False
    mean: Optional[list[float]] = None      # override the backbone's pretrained_cfg normalisation (0..1 scale)
    std: Optional[list[float]] = None
    freeze: FreezeCfg = field(default_factory=FreezeCfg)
    boundary_head: bool = False
    grad_checkpointing: bool = False
    decoder_channels: Optional[int] = None
    dropout: float = 0.0                    # Dropout2d before the segmentation head (0: off)
    drop_path: Optional[float] = None       # stochastic depth: rate rising over the encoder's blocks to this (0: off;
                                            # null: the encoder's own default, 0.1 for MiT)
    # warm start of the whole segmentation model (encoder and decoder): a run id, a run folder or a .pth file;
    # tensors whose name and shape match are loaded (mapsage.models.warm_start), the rest keep their init
    init_from: Optional[str] = None
    init_weights: Literal["auto", "ema", "raw"] = "auto"   # auto: a run's best_ema.pth, else best.pth / last.pth
    addons: list[str] = field(default_factory=list)          # decoder add-ons by registry name (mapsage.models.addons)
    # parameter budget (e.g. 1.82e6 for the face-parsing limit): a launch of a bigger model is refused before
    # training, naming both counts (null: no limit)
    max_params: Optional[float] = None


@dataclass
class LossPhase:
    from_epoch: int = 0
    terms: dict[str, float] = field(default_factory=lambda: {"ce": 0.7, "dice": 0.3})


@dataclass
class LossCfg:
    ignore_index: Optional[int] = None      # null: the dataset's ignore_index (the health check compares them)
    class_weights: Optional[list[float] | Literal["auto"]] = None   # "auto": computed from the training masks
    class_weights_method: Literal["inverse", "sqrt_inverse", "effective"] = "inverse"   # for class_weights: auto
    class_weights_beta: float = 0.999       # effective number (Cui et al.): (1 - beta) / (1 - beta^n)
    label_smoothing: float = 0.0            # CE / OHEM label smoothing (0: off)
    schedule: list[LossPhase] = field(default_factory=lambda: [LossPhase()])
    ohem_keep: float = 0.3                  # OHEM: keep the hardest share of pixels (term name "ohem")
    focal_gamma: float = 2.0
    boundary_classes: list[str] = field(default_factory=list)   # boundary loss on these classes (all if empty)
    boundary_px: int = 3
    lovasz_guard: bool = True               # keep old mix 10 more epochs if val mIoU fell below the last milestone
    lovasz_guard_epochs: int = 10           # the guard's milestone spacing and postponement (epochs)

    def validate(self):
        known = set(LOSS_TERMS)
        for phase in self.schedule:
            bad = set(phase.terms) - known
            if bad:
                raise ValueError(f"unknown loss term(s) {sorted(bad)}; known terms: {sorted(known)}")


@dataclass
class AugmentCfg:
    enabled: bool = True
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: float = 0.5
    vflip: float = 0.0
    rotate_deg: float = 10.0
    rotate_p: float = 0.3
    color_jitter: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1, 0.05])  # brightness contrast sat hue
    color_jitter_p: float = 0.5
    cutmix_p: float = 0.0
    cutmix_same_domain: bool = True
    mixup_p: float = 0.0
    mixup_alpha: float = 0.2
    class_aware_sampling: bool = False
    class_aware_temp: float = 0.1           # rare-class sampling temperature over class pixel shares (lower: rarer)
    cat_max_ratio: float = 0.75             # re-crop when one class fills more than this share (mmseg)
    cutmix_alpha: float = 1.0               # CutMix box share lam ~ Beta(alpha, alpha) (1.0: uniform)
    # progressive resolution: [{from_epoch, size: [h, w]}] (crop size by epoch); crop_sizes: square sizes drawn per
    # batch (e.g. [512, 640, 768]). Tiles are cropped at the largest size, batches cut (or resized) to the drawn one
    crop_schedule: list["CropPhase"] = field(default_factory=list)
    crop_sizes: list[int] = field(default_factory=list)
    crop_resize: bool = False               # true: resize the batch to the size (keeps the context) instead of cropping
    phases: list["AugPhase"] = field(default_factory=list)   # augmentation changes by epoch (mixing probabilities)
    mix_off_last_epochs: int = 0            # CutMix and MixUp off for the last N epochs
    random_erasing_p: float = 0.0           # random erasing (image only; albumentations Erasing)
    random_erasing_scale: list[float] = field(default_factory=lambda: [0.02, 0.2])
    elastic_p: float = 0.0                  # elastic transform (image bilinear, mask nearest)
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0
    sampler: "SamplerCfg" = field(default_factory=lambda: SamplerCfg())
    # where augmentation runs: albumentations per tile in the loader (CPU), or kornia batch-wise on the training
    # device after loading (mapsage.data.gpu_augment; on a machine without a GPU kornia runs on the CPU, said in the log)
    backend: Literal["albumentations", "kornia"] = "albumentations"


@dataclass
class CropPhase:
    from_epoch: int = 0
    size: list[int] = field(default_factory=lambda: [512, 512])


@dataclass
class AugPhase:
    from_epoch: int = 0
    cutmix_p: Optional[float] = None        # null: keep augment.cutmix_p
    mixup_p: Optional[float] = None
    mixup_alpha: Optional[float] = None
    cutmix_alpha: Optional[float] = None


@dataclass
class SamplerCfg:
    # uniform (default; augment.class_aware_sampling keeps its rare-class sampler), effective_number (beta),
    # class_balanced (oversampling cap), repeat_factor (t, alpha) -- mapsage.train.samplers
    kind: Literal["uniform", "effective_number", "class_balanced", "repeat_factor"] = "uniform"
    by: Literal["presence", "pixels"] = "presence"   # class frequency: tiles containing it, or its pixel share
    beta: float = 0.999
    cap: float = 10.0                       # class_balanced: no tile drawn more than cap x its uniform rate
    t: float = 0.3                          # repeat_factor threshold frequency
    alpha: float = 0.5                      # repeat_factor exponent: r_c = max(1, (t / f_c)^alpha)
    min_share: float = 1e-3                 # a class is present in a tile when it fills at least this share


@dataclass
class SwaCfg:
    enabled: bool = False
    start_epoch: Optional[int] = None       # first epoch averaged (null: the last quarter of train.epochs)
    bn_batches: Optional[int] = None        # batches for the BatchNorm statistics (null: one epoch's worth)


@dataclass
class EmaCfg:
    enabled: bool = True
    decay: float = 0.999
    warmup: bool = True                     # effective decay min(decay, (1+t)/(10+t)) so early EMA is not the init


@dataclass
class EarlyStopCfg:
    patience: int = 12
    min_delta: float = 0.001


@dataclass
class TrainCfg:
    epochs: int = 50
    batch_size: int = 8                     # per process (per GPU)
    num_workers: int = 2
    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    backbone_lr_mult: float = 0.65
    head_lr_mult: float = 1.0
    warmup_epochs: float = 1.0
    warmup_ratio: float = 1e-3              # LR at the start of warmup, as a share of the peak
    min_lr_ratio: float = 0.01              # cosine floor, as a share of the peak
    scale_lr: bool = True                   # LR scaled linearly with the global batch
    base_batch: int = 8                     # the global batch the LR above is meant for
    grad_clip: Optional[float] = 1.0
    accumulate: int = 1
    amp: bool = True                        # on GPU only; CPU runs in fp32
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"   # auto: bf16 where supported, else fp16 + GradScaler
    ema: EmaCfg = field(default_factory=EmaCfg)
    early_stop: EarlyStopCfg = field(default_factory=EarlyStopCfg)
    seed: int = 42
    deterministic: bool = False
    steps_per_epoch: Optional[int] = None   # optimiser steps per epoch (null: one pass over the training set)
    log_every: int = 10                     # steps between sampled step-loss events
    val_every: int = 1
    # best checkpoints and early stopping: miou | mbiou | mf1 (Dice) | mfscore (mmseg) | mfscore_fg (face parsing:
    # mean F-score over the foreground classes) | macc | aacc
    save_best_by: Literal[SELECTABLE] = "miou"      # the metric registry (mapsage/metric_names.py)
    lr_schedule: Literal["cosine", "poly", "step", "cosine_restarts", "onecycle", "constant"] = "cosine"
    poly_power: float = 1.0
    lr_steps: list[float] = field(default_factory=list)     # step: epochs at which the LR is multiplied by lr_gamma
    lr_gamma: float = 0.1
    restart_epochs: float = 10.0            # cosine_restarts: first cycle length (epochs)
    restart_mult: float = 1.0               # cosine_restarts: each next cycle this many times longer
    onecycle_pct: float = 0.3               # onecycle: share of the run spent rising
    onecycle_div: float = 25.0              # onecycle: start LR = peak / div
    onecycle_final_div: float = 1e4         # onecycle: end LR = start LR / final_div
    # layer-wise LR decay per encoder block (replaces backbone_lr_mult when set): block i of L gets
    # head_lr_mult x layer_decay^(L - i); layer_tiers: explicit multipliers of the encoder's blocks split into
    # len(tiers) groups, shallow to deep (e.g. [0.25, 0.5, 1.0]; set head_lr_mult for the head)
    layer_decay: Optional[float] = None
    layer_tiers: list[float] = field(default_factory=list)
    swa: SwaCfg = field(default_factory=SwaCfg)
    checkpoint_every_min: float = 10.0      # mid-epoch last.pth at most this many minutes apart (0: off)
    checkpoint_every_steps: int = 0         # ... and/or every N optimiser steps (0: off)
    # wall-clock budget of the training run in hours (e.g. 0.5): when it runs out the run stops at the next step,
    # saves last.pth (resumable) and ends `succeeded`, saying so in its log (null: no limit)
    max_time: Optional[float] = None
    # best checkpoints and early stopping on clean validation (clean) or on S = combo_alpha * clean +
    # (1 - combo_alpha) * mean over reliability.combo_corruptions at reliability.combo_severity (combo)
    select_by: Literal["clean", "combo"] = "clean"
    combo_alpha: float = 0.7


@dataclass
class TTACfg:
    scales: list[float] = field(default_factory=lambda: [1.0])
    hflip: bool = False
    vflip: bool = False


@dataclass
class EvalCfg:
    mode: Literal["whole", "slide"] = "whole"
    tile: list[int] = field(default_factory=lambda: [1024, 1024])
    stride: list[int] = field(default_factory=lambda: [768, 768])
    window_batch: int = 4
    tta: TTACfg = field(default_factory=TTACfg)
    boundary_px: int = 3
    boundary_strip_px: int = 0              # labels with ignore strips along class borders (ISPRS eroded): strips
                                            # up to this width count as the border in Boundary IoU (0: off)
    background_classes: Optional[list[str]] = None   # left out of the foreground mean F-score (null: "background")
    split: str = "val"
    max_tiles: Optional[int] = None
    save_predictions: bool = True
    save_probabilities: bool = False
    # A/B decisions: a variant that passes its threshold is still refused when the other metric (Boundary IoU
    # for an mIoU criterion, mIoU for a Boundary IoU one) falls by more than this many points
    ab_guard: float = 0.5
    speed_repeats: int = 5                  # images/s: at least this many warm timings (median and IQR over them;
                                            # a split with fewer timed tiles re-times its last tile)
    temperature: Optional[float] = None     # logits divided by this before the softmax (temperature scaling;
                                            # null: off). A reliability run fits it on validation.


@dataclass
class TTAVariant:
    name: str = "tta"
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    hflip: bool = True
    vflip: bool = False


@dataclass
class TTAABCfg:
    variants: list[TTAVariant] = field(default_factory=lambda: [TTAVariant()])
    threshold: float = 0.8                  # mIoU points the variant must gain to be kept


@dataclass
class PostCfg:
    enabled: bool = False
    min_area: dict[str, int] = field(default_factory=dict)    # class name -> minimum component area (px)
    road_class: Optional[str] = None
    road_min_width: int = 0                 # morphological opening width in px (0: off)
    threshold: float = 0.0                  # mIoU points needed to keep post-processing


@dataclass
class EnsembleMember:
    checkpoint: str = ""                    # a checkpoint file, a run id or "latest:<template>" (as stage.checkpoint)
    weight: Optional[float] = None          # null for all members: the plan's 0.6/0.4 (two members), else equal


@dataclass
class EnsembleCfg:
    members: list[EnsembleMember] = field(default_factory=list)
    # members picked when the stage starts, added to `members`: the `top_k` best complete trials of a sweep
    # (`from_sweep`: its id), and/or the runs whose id matches `pattern` (fnmatch, e.g. "*_f?_*"; with `top_k`, the
    # best by their named checkpoint's score)
    from_sweep: Optional[str] = None
    pattern: Optional[str] = None
    top_k: int = 0
    average: Literal["prob", "logit"] = "prob"
    calibrate: bool = False                 # divide each member's logits by its fitted temperature (its run's
                                            # newest reliability card); members without one stay uncalibrated
    threshold: float = 0.0                  # mIoU points over the best member needed to keep the ensemble


@dataclass
class CRFCfg:
    iterations: int = 5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    sam_label_weight: float = 0.6           # sam+crf: unary from (1-w) * softmax + w * one-hot(SAM labels)


@dataclass
class SAMCfg:
    # efficientsam_ti / efficientsam_s (plan default: EfficientSAM-Ti), any segment_anything registry key
    # (vit_b, vit_l, vit_h), or vit_t (MobileSAM, needs the mobile_sam package)
    model_type: str = "efficientsam_ti"
    checkpoint: Optional[str] = None        # local file; none -> sam chains unavailable
    neg_offset_px: list[int] = field(default_factory=lambda: [3, 5])
    max_points_per_component: int = 3
    neg_points_per_component: int = 4       # negative points spread around the component, neg_offset_px outside
    use_box: bool = True
    min_component_area: int = 64
    min_mask_iou: float = 0.3               # reject a SAM mask overlapping its raw component less than this IoU
    prompt_batch: int = 16                  # prompts decoded per SAM call

    def validate(self):
        lo, hi = (list(self.neg_offset_px) + [None, None])[:2]
        if len(self.neg_offset_px) != 2 or not 1 <= lo <= hi:
            raise ValueError(f"refine.sam.neg_offset_px must be [min, max] pixels with 1 <= min <= max, "
                             f"got {self.neg_offset_px}")
        if self.max_points_per_component < 1:
            raise ValueError("refine.sam.max_points_per_component must be at least 1")


@dataclass
class RefineCfg:
    chains: list[str] = field(default_factory=lambda: ["raw", "crf", "sam", "sam+crf"])
    max_tiles: Optional[int] = 100
    threshold_biou: float = 1.0             # Boundary IoU points needed to adopt a chain
    crf: CRFCfg = field(default_factory=CRFCfg)
    sam: SAMCfg = field(default_factory=SAMCfg)

    def validate(self):
        known = ("raw", "crf", "sam", "sam+crf")          # mapsage.refine.CHAINS
        bad = [c for c in self.chains if str(c).strip().lower() not in known]
        if bad:
            raise ValueError(f"unknown refine.chains {bad}; known chains: {', '.join(known)}")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ValueError(f"refine.max_tiles must be at least 1 (or null for all tiles), got {self.max_tiles}")


@dataclass
class TeacherCfg:
    # timm: a timm model name, optionally with its pretrained tag (vit_large_patch16_dinov3.sat493m: DINOv3-SAT);
    # workbench: a segmentation checkpoint the workbench trained (then logit distillation is possible)
    kind: Literal["timm", "workbench"] = "timm"
    model: str = "vit_small_patch14_dinov2"
    weights: Optional[str] = None            # timm: local weights file; workbench: .pth, run id or latest:<template>
    model_kwargs: dict[str, Any] = field(default_factory=dict)   # timm create_model kwargs (embed_dim, depth, ...)
    layer: int = -1                          # timm: the block whose tokens are the target; workbench: encoder stage
    img_size: Optional[int] = None           # timm: input / tile-window size (multiple of the patch); null: model's
    mean: Optional[list[float]] = None       # teacher input normalisation (0..1 scale); null: its pretrained config
    std: Optional[list[float]] = None
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"   # fp16 on GPU only (bf16 is used on CPU instead)
    cache_features: bool = True              # cache teacher features where the augmentation allows (mapsage.distill)
    cache_mode: Literal["auto", "tile", "sample"] = "auto"   # auto: whole-tile cache only where it is cheaper
    cache_mb: float = 4096.0                 # memory cap of the feature cache (least recently used tiles dropped)


@dataclass
class DistillPhase:
    from_epoch: int = 0
    feature_weight: float = 1.0
    logit_weight: float = 0.0


@dataclass
class DistillCfg:
    enabled: bool = False
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    student_stages: list[int] = field(default_factory=lambda: [-1])   # indices into the encoder's feature maps
    feature_loss: Literal["l2", "at"] = "l2"
    feature_weight: float = 1.0
    logit_weight: float = 0.0
    temperature: float = 3.0
    schedule: list[DistillPhase] = field(default_factory=list)   # epoch phases of the weights; empty: constant
    baseline: str = "train"                  # kind distill A/B arm without teacher: train | none | ckpt / run id
    threshold: float = 0.0                   # points of train.save_best_by the distilled student must gain (keep)

    def validate(self):
        if not 1.0 <= self.temperature <= 10.0:
            raise ValueError(f"distill.temperature {self.temperature} is outside 1..10 (plan: 2-4)")
        if not self.student_stages:
            raise ValueError("distill.student_stages is empty; list at least one encoder stage index (e.g. [-1])")
        weights = [self.feature_weight, self.logit_weight]
        weights += [w for p in self.schedule for w in (p.feature_weight, p.logit_weight)]
        if any(w < 0 for w in weights):
            raise ValueError("distill weights (feature_weight, logit_weight, schedule) must be >= 0")
        starts = [p.from_epoch for p in self.schedule]
        if any(s < 0 for s in starts) or len(set(starts)) != len(starts):
            raise ValueError(f"distill.schedule from_epoch values must be distinct and >= 0, got {starts}")
        if not str(self.baseline).strip():
            raise ValueError("distill.baseline is empty; use 'train', 'none' or a checkpoint / run id")


@dataclass
class HealthCfg:
    checks: list[str] = field(default_factory=lambda: [
        "ids", "label_ids", "per_class", "normalisation", "alignment", "splits", "eval_consistency", "metric",
        "sanity"])
    scan_max_masks: Optional[int] = None
    phash_distance: int = 6
    sanity_steps: int = 60
    sanity_lr: float = 1e-3
    sanity_batch: int = 2
    sanity_size: int = 128
    sanity_loss_ratio: float = 0.5           # the loss must fall below this share of its start
    weak_classes: int = 3
    # eval_consistency: final-evaluation templates (evaluate / tta_ab) compared with training-time validation;
    # empty: every template under configs/ of kind evaluate or tta_ab on the same dataset
    eval_configs: list[str] = field(default_factory=list)
    quick_eval_tiles: int = 4                # per_class without a run under test: val tiles of the quick evaluation
    alignment_trials: int = 6                # alignment: random draws of the training transforms
    hash_max_images: Optional[int] = None    # splits: cap of images hashed per split (None: all)


@dataclass
class SlurmCfg:
    """Per-template SLURM request (runners/executors/slurm.py); None: the workspace setting (``slurm_*``)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    time_min: Optional[int] = None          # time limit in minutes
    nodes: Optional[int] = None
    tasks_per_node: Optional[int] = None    # torchrun launchers per node (default 1; a node's GPUs run under one)
    gpus_per_node: Optional[int] = None     # default: runtime.gpus (0 on a CPU-only cluster)
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None          # memory per node


@dataclass
class ExportCfg:
    # what to build: "<format>:<precision>", format onnx | torchscript, precision fp32 | fp16 | int8 (int8: onnx only)
    targets: list[str] = field(default_factory=lambda: ["onnx:fp32", "onnx:int8", "onnx:fp16", "torchscript:fp32"])
    threshold: float = -0.5                 # mIoU points (variant - PyTorch); below it the variant is dropped
    max_tiles: Optional[int] = None         # validation tiles for parity (None: eval.max_tiles, else all)
    opset: int = 17
    onnx_exporter: Literal["torchscript", "dynamo"] = "torchscript"   # torch.onnx.export(dynamo=...)
    torchscript_method: Literal["trace", "script"] = "trace"
    int8_mode: Literal["auto", "static", "dynamic"] = "auto"   # auto: static when training tiles exist
    calib_tiles: int = 16                   # training tiles for static INT8 calibration
    calib_size: list[int] = field(default_factory=lambda: [512, 512])
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    int8_per_channel: bool = True
    int8_reduce_range: Optional[bool] = None    # None: on for CPUs without VNNI (onnxruntime's advice)
    int8_op_types: list[str] = field(default_factory=lambda: ["Conv", "MatMul", "Gemm"])
    speed_size: list[int] = field(default_factory=lambda: [512, 512])   # speed: a real crop of this size
    speed_batch: int = 1
    speed_repeats: int = 5                  # timed passes per engine (median), after one warm-up pass
    speed_threads: Optional[int] = None     # CPU threads for both engines (None: runtime.threads or torch's)
    parity_atol: float = 1e-3               # TorchScript / ONNX export check on a second input shape (fp32)

    def validate(self):
        if not self.targets:
            raise ValueError("export.targets is empty; list e.g. [onnx:fp32, onnx:int8]")
        for t in self.targets:
            fmt, _, prec = str(t).partition(":")
            if fmt not in ("onnx", "torchscript") or prec not in ("fp32", "fp16", "int8"):
                raise ValueError(f"export.targets entry {t!r} must be '<onnx|torchscript>:<fp32|fp16|int8>'")
            if fmt == "torchscript" and prec == "int8":
                raise ValueError("export.targets: torchscript:int8 is not supported (INT8 uses onnxruntime's "
                                 "quantisation); use onnx:int8")
        if self.calib_tiles < 1:
            raise ValueError("export.calib_tiles must be at least 1")


@dataclass
class RuntimeCfg:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus: int = 1                           # GPUs per job (torchrun when > 1)
    threads: Optional[int] = None           # torch CPU threads
    keep_freed_memory: bool = True          # glibc keeps freed blocks for reuse (mapsage/runtime.py): no page
                                            # faults on every forward pass; 1.8x faster batched CPU inference
    executor: Optional[Literal["local", "slurm"]] = None   # where the job runs; None: the workspace setting
    slurm: SlurmCfg = field(default_factory=SlurmCfg)


@dataclass
class PredictCfg:
    """The ``predict`` stage: predictions for unlabelled data (a split, an image folder or a raster)."""
    source: str = ""                        # a split name, an image folder or a raster file ("" = test split)
    weights: Literal["auto", "raw", "ema"] = "auto"   # which weights of the checkpoint
    adopt: bool = True                      # apply the TTA / post-processing the run's A/B stages kept
    calibrate: bool = False                 # temperature scaling with the T of the run's newest reliability card
    probabilities: Literal["off", "float16", "uint8"] = "off"   # per-class probabilities beside the ids
    color: bool = True                      # colour PNGs beside the id PNGs
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])   # raster bands fed as RGB (1-based)
    value_scale: Optional[float] = None     # full-brightness value of non-8-bit raster bands (e.g. 4095)
    polygons: bool = True                   # rasters: per-class polygons beside the COG
    polygon_format: Literal["gpkg", "geojson"] = "gpkg"
    simplify: float = 0.0                   # polygon simplification tolerance in map units (0: off)
    min_area_m2: dict[str, float] = field(default_factory=dict)   # class name -> smallest polygon kept (m²)
    block_rows: int = 1024                  # rows per polygonisation block (memory bound)


@dataclass
class LrFindCfg:
    """The LR range test (stage kind ``lr_find``): an exponential LR ramp over ``steps`` steps."""
    min_lr: float = 1e-7
    max_lr: float = 1.0
    steps: int = 100
    smooth: float = 0.9                     # EMA weight of the smoothed loss
    diverge: float = 4.0                    # stop once the smoothed loss exceeds this many times its minimum

    def validate(self):
        if not 0 < self.min_lr < self.max_lr:
            raise ValueError(f"lr_find: need 0 < min_lr < max_lr, got {self.min_lr} and {self.max_lr}")
        if self.steps < 5:
            raise ValueError(f"lr_find.steps must be at least 5, got {self.steps}")


@dataclass
class SweepCfg:
    """A hyperparameter sweep (``mapsage sweep start``): Optuna samples ``parameters`` -- dotted config keys
    (``train.lr``, ``loss.schedule.0.terms.dice``, ``augment.crop_size``) mapped to ``{type: float|int, low, high,
    log, step}`` or ``{type: choice, values: [...]}`` (a plain list is a choice) -- and every trial is an ordinary
    run of the rest of this config. ``metric`` is the per-epoch validation figure each trial reports (the trial's
    value is its best epoch); pruned trials end with the status ``pruned``."""
    parameters: dict[str, Any] = field(default_factory=dict)
    sampler: Literal[SWEEP_SAMPLERS] = "tpe"           # the registry: mapsage/registries.py
    n_trials: int = 20                      # trial budget (grid: at most the grid's size)
    max_wall_h: Optional[float] = None      # wall-clock budget of the whole sweep (hours); no new trial after it
    max_gpu_h: Optional[float] = None       # GPU-hours budget (trial wall time x GPUs, summed)
    # by task: mapsage.metric_names.SWEEP_METRICS (segmentation: miou, mbiou, mf1, macc, aacc; image
    # classification: top1, macro_f1); Config.validate checks the metric against the task
    metric: Literal[SWEEP_METRICS_SEG + SWEEP_METRICS_CLS] = "miou"
    direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal[SWEEP_PRUNERS] = "median"
    min_epochs: int = 1                     # no trial is pruned before it reported this many epochs
    startup_trials: int = 3                 # median: trials that run to the end before any pruning
    parallel: int = 0                       # trials at once (0: as many as the scheduler has free slots)
    seed: int = 0                           # the sampler's seed
    # set by the sweep driver in each trial's config (the link from a run to its sweep and Optuna trial)
    id: Optional[str] = field(default=None, metadata={"internal": True})
    trial: Optional[int] = field(default=None, metadata={"internal": True})
    trial_id: Optional[int] = field(default=None, metadata={"internal": True})

    def validate(self):
        if self.n_trials < 1:
            raise ValueError(f"sweep.n_trials must be at least 1, got {self.n_trials}")
        if self.min_epochs < 0 or self.startup_trials < 0 or self.parallel < 0:
            raise ValueError("sweep.min_epochs, sweep.startup_trials and sweep.parallel must be 0 or more")
        for key in ("max_wall_h", "max_gpu_h"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                raise ValueError(f"sweep.{key} must be positive hours (or null), got {v}")


@dataclass
class CvCfg:
    """Repeats and folds of one experiment group, set on each run by ``mapsage run --seeds N --folds K``
    (the folds themselves are ``dataset.split.folds`` / ``dataset.split.fold``)."""
    group: Optional[str] = field(default=None, metadata={"internal": True})   # the repeat/fold group id
    repeat: Optional[int] = field(default=None, metadata={"internal": True})  # the seed index within the group


@dataclass
class ReliabilityCfg:
    """The reliability card (stage kind ``reliability``, mapsage.reliability)."""
    corruptions: list[str] = field(default_factory=lambda: [
        "gaussian_noise", "defocus_blur", "motion_blur", "jpeg", "brightness_contrast", "haze", "cloud",
        "color_shift", "resample"])
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])     # of 1..5
    max_tiles: Optional[int] = None         # tiles per corrupted pass, spread over eval.split (null: all)
    calibration_bins: int = 15
    calibration_binning: Literal["fixed", "mass"] = "fixed"   # equal-width or equal-mass confidence bins
    sample_per_tile: int = 20000            # pixels per tile kept for the temperature fit
    block_by: Literal["auto", "group", "grid", "tile"] = "auto"   # spatial blocks of the paired bootstrap
    grid_k: int = 2                         # grid: K x K blocks per scene
    min_blocks: int = 8                     # auto: scenes needed before scenes are the blocks
    n_boot: int = 2000
    extent_tiles: Optional[int] = 6         # tiles predicted twice for extent invariance (null: all)
    extent_window_scale: float = 0.75       # second window = this x the first (whole: eval.tile)
    extent_zone_px: int = 16                # a disagreement this close to a window seam / image border is "seam" /
                                            # "border"
    combo_corruptions: list[str] = field(default_factory=lambda: ["gaussian_noise", "defocus_blur", "jpeg", "haze"])
    combo_severity: int = 3                 # train.select_by: combo validates at this severity
    combo_max_tiles: Optional[int] = None   # tiles per corrupted validation pass during training (null: all)

    def validate(self):
        for key in ("corruptions", "combo_corruptions"):
            bad = [c for c in getattr(self, key) if c not in CORRUPTIONS]
            if bad:
                raise ValueError(f"reliability.{key}: unknown corruption(s) {bad}; known: {list(CORRUPTIONS)}")
        for s in list(self.severities) + [self.combo_severity]:
            if not 1 <= int(s) <= MAX_SEVERITY:
                raise ValueError(f"reliability severities must be in 1..{MAX_SEVERITY}, got {s}")
        if self.grid_k < 1:
            raise ValueError("reliability.grid_k must be at least 1")


@dataclass
class ClsSizePhase:
    from_epoch: int = 0
    size: int = 224


@dataclass
class ClassifyCfg:
    """Image classification (``task: classification``, stage kind ``classify``; :mod:`mapsage.classify`). The
    dataset section keeps ``root``, ``name``, ``classes`` (class names in index order) and ``split`` (by_group with
    ``folds``/``fold`` for k-fold CV, ``group_regex`` applied to ``<group column>/<filename>``)."""
    layout: Literal["csv", "folders"] = "csv"   # csv: labels_csv (filename, category_id); folders: one per class
    images: str = "train"                   # image folder, relative to dataset.root
    labels_csv: str = "train_labels.csv"    # csv layout: filename,category_id (other columns kept as data)
    # category_id of each class in dataset.classes order (kept so submissions carry the original ids; empty:
    # 0..C-1 for csv, the folder names' order for folders)
    category_ids: list[int] = field(default_factory=list)
    group_column: str = "source_tile"       # csv column naming the unit kept whole in one split/fold ("": filename)
    test_images: str = "test_dataset"       # images `mapsage classify predict` reads by default
    model: str = "resnet18"                 # a timm model name
    pretrained: str = "none"                # a local weights file (never downloaded) or none
    head: Literal["linear", "cosine", "arcface"] = "linear"
    head_scale: float = 30.0                # cosine / arcface logit scale s
    arcface_margin: float = 0.2             # additive angular margin m (arcface, hard targets only)
    drop_rate: float = 0.0
    drop_path: float = 0.0
    img_size: int = 224
    size_schedule: list[ClsSizePhase] = field(default_factory=list)   # progressive resolution: 224 -> 320 -> 448
    loss: Literal["ce", "lsce", "focal", "balanced_softmax"] = "lsce"
    label_smoothing: float = 0.05
    focal_gamma: float = 2.0
    mixup_alpha: float = 0.2                # timm Mixup/CutMix (0: off)
    cutmix_alpha: float = 0.8
    mix_prob: float = 1.0                   # share of batches mixed
    mix_switch_prob: float = 0.5            # share of mixed batches that use CutMix rather than Mixup
    rrc_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])   # RandomResizedCrop area range
    rotate90: bool = True                   # aerial scenes: random 90-degree rotations
    # timm RandAugment policy applied to training images after the crop/flips, e.g. "rand-m9-mstd0.5-inc1"
    # (sections: m magnitude, n ops, mstd magnitude noise, mmax, inc 0/1, p probability); "": off
    randaugment: str = ""
    lr_clamp: list[float] = field(default_factory=lambda: [5e-6, 5e-4])   # after linear scaling (train.base_batch)
    calibrate: bool = True                  # fit a temperature on validation after training (per fold)
    calibration_bins: int = 15
    errors_top_k: int = 24                  # most confident mistakes kept for the error gallery
    gradcam_images: int = 8                 # Grad-CAM maps saved for the top mistakes (0: off)
    max_images: Optional[int] = None        # cap of training images (quick runs)
    # checks run at the start of every classification run (mapsage.classify.health): ids, normalisation, splits,
    # metric, sanity (overfit one batch; health.sanity_*). A failing check fails the run.
    health_checks: list[str] = field(default_factory=lambda: ["ids", "normalisation", "splits", "metric"])

    def validate(self):
        if self.category_ids and len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"classify.category_ids has repeated ids: {self.category_ids}")
        lo, hi = (list(self.lr_clamp) + [None, None])[:2]
        if len(self.lr_clamp) != 2 or not 0 < lo <= hi:
            raise ValueError(f"classify.lr_clamp must be [min, max] with 0 < min <= max, got {self.lr_clamp}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"classify.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.img_size < 16:
            raise ValueError(f"classify.img_size must be at least 16, got {self.img_size}")
        if self.randaugment:
            import re

            parts = str(self.randaugment).split("-")
            bad = [p for p in parts[1:] if not re.fullmatch(r"(m|n|mmax|inc)\d+|(mstd|p)\d+(\.\d+)?|t\w+", p)]
            if parts[0] != "rand" or bad:
                raise ValueError(f"classify.randaugment: {self.randaugment!r} is not a RandAugment policy "
                                 f"(timm's form, e.g. 'rand-m9-mstd0.5-inc1'"
                                 + (f"; unknown section(s) {', '.join(bad)}" if bad else "; it starts with 'rand'")
                                 + "); set it to '' to turn RandAugment off")


def _either(names) -> str:
    """``a, b or c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass
class Config:
    dataset: DatasetCfg
    stage: StageCfg = field(default_factory=StageCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    tta_ab: TTAABCfg = field(default_factory=TTAABCfg)
    post: PostCfg = field(default_factory=PostCfg)
    ensemble: EnsembleCfg = field(default_factory=EnsembleCfg)
    refine: RefineCfg = field(default_factory=RefineCfg)
    distill: DistillCfg = field(default_factory=DistillCfg)
    health: HealthCfg = field(default_factory=HealthCfg)
    export: ExportCfg = field(default_factory=ExportCfg)
    predict: PredictCfg = field(default_factory=PredictCfg)
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)
    sweep: SweepCfg = field(default_factory=SweepCfg)
    lr_find: LrFindCfg = field(default_factory=LrFindCfg)
    cv: CvCfg = field(default_factory=CvCfg)
    reliability: ReliabilityCfg = field(default_factory=ReliabilityCfg)
    meta: dict[str, Any] = field(default_factory=dict)   # free-form notes (not validated)
    task: Literal["segmentation", "classification"] = "segmentation"
    classify: ClassifyCfg = field(default_factory=ClassifyCfg)

    def validate(self):
        if self.stage.kind == "classify" and self.task != "classification":
            raise ValueError("stage.kind: classify trains an image classifier; set task: classification")
        if self.task != "classification" and self.sweep.metric not in SWEEP_METRICS["segmentation"]:
            raise ValueError(f"sweep.metric: {self.sweep.metric} is an image-classification figure; a segmentation "
                             f"sweep reports {_either(SWEEP_METRICS['segmentation'])} "
                             f"(set sweep.metric={SWEEP_METRICS['segmentation'][0]})")
        if self.task == "classification":
            if self.stage.kind not in ("classify",):
                raise ValueError(f"task: classification runs stage.kind classify, not {self.stage.kind!r}")
            if self.sweep.parameters and self.sweep.metric not in SWEEP_METRICS["classification"]:
                raise ValueError(f"sweep.metric: {self.sweep.metric} is a segmentation figure; a classification "
                                 f"sweep reports {_either(SWEEP_METRICS['classification'])} "
                                 f"(set sweep.metric={SWEEP_METRICS['classification'][0]})")
            if self.classify.loss == "balanced_softmax" and self.augment.sampler.kind != "uniform":
                raise ValueError(f"classify.loss: balanced_softmax already corrects for the class prior and "
                                 f"augment.sampler.kind: {self.augment.sampler.kind} rebalances it again; use one "
                                 f"(set augment.sampler.kind=uniform or another classify.loss)")

    @property
    def ignore_index(self) -> int:
        return self.dataset.ignore_index

    @property
    def loss_ignore_index(self) -> int:
        return self.dataset.ignore_index if self.loss.ignore_index is None else self.loss.ignore_index
