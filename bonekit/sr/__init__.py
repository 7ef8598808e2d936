"""BoneSR: micro-CT-like super-resolution of clinical CT (Jin et al. 2021, pix2pixHD).

Modules, one place for each thing:

- :mod:`~bonekit.sr.networks`: generators (pix2pixHD global / local enhancer, pix2pix U-Net, U-Net),
  multiscale PatchGAN discriminators, LSGAN, feature-matching and optional VGG losses;
- :mod:`~bonekit.sr.degrade`: clinical MDCT simulated from micro-CT (paired data without a scanner);
- :mod:`~bonekit.sr.pairing`: rigid registration, DTW + SIFT slice matching, the LumbarSR layout;
- :mod:`~bonekit.sr.train`: the training run (config, schedule, checkpoints, resume, DDP);
- :mod:`~bonekit.sr.model`: model files (the catalogue of shipped models is :mod:`bonekit.models`);
- :mod:`~bonekit.sr.infer`: volume in, volume out (tiles, GPU/CPU, out-of-memory fallback);
- :mod:`~bonekit.sr.metrics` and :mod:`~bonekit.sr.evaluate`: SSIM, PSNR, cosine, FID, morphometry agreement;
- :mod:`~bonekit.sr.cli`: ``bonekit sr ...``.

Torch is imported only where networks run, so ``import bonekit.sr`` stays light.
"""
