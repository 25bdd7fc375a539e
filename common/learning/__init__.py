"""Learning parts that more than one bundle uses: network wrappers around MONAI's networks
(:mod:`~common.learning.networks`, e.g. 2.5D slice stacks and padding to what a U-Net's strides
need), MONAI transforms with their dictionary twins (:mod:`~common.learning.transforms`: the
input checks every bundle runs, so each refuses bad input with the same message), image and
task metrics (:mod:`~common.learning.metrics`: NRMSE/PSNR/SSIM, regional and lesion SUV errors),
and the small named functions bundle configs call instead of long ``$`` expressions
(:mod:`~common.learning.workflow`). What serves one task lives in that bundle's own package.
"""
