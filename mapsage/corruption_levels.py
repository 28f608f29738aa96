"""The corruption registry: the names of the image corruptions the reliability card and robustness validation
apply, their strength at each severity and their labels. The list is :data:`LEVELS`; the config schema validates
``reliability.corruptions`` against it and :mod:`mapsage.reliability.corruptions` implements each entry."""

from __future__ import annotations

MAX_SEVERITY = 5

# the strength of each corruption at severities 1..5
LEVELS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.07, 0.10, 0.14, 0.20),        # noise std, share of full scale
    "defocus_blur": (2, 3, 4, 6, 8),                         # disc radius (px)
    "motion_blur": (5, 9, 13, 17, 23),                       # kernel length (px)
    "jpeg": (40, 25, 15, 10, 6),                             # JPEG quality
    "brightness_contrast": ((0.10, -0.15), (0.18, -0.30), (0.25, -0.45), (0.32, -0.55), (0.40, -0.65)),
    "haze": (0.25, 0.40, 0.55, 0.65, 0.75),                  # mean veil 1 - t
    "cloud": (0.08, 0.15, 0.25, 0.35, 0.45),                 # share of the image under opaque cloud
    "color_shift": (12, 24, 36, 50, 65),                     # largest per-band offset (grey levels)
    "resample": (0.5, 0.33, 0.25, 0.18, 0.125),              # downscale factor before scaling back up
}
CORRUPTIONS: tuple[str, ...] = tuple(LEVELS)
LABELS = {"gaussian_noise": "Gaussian noise", "defocus_blur": "defocus blur", "motion_blur": "motion blur",
          "jpeg": "JPEG", "brightness_contrast": "brightness/contrast", "haze": "haze",
          "cloud": "cloud occlusion", "color_shift": "colour/band shift", "resample": "down-up resampling"}
