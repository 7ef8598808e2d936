"""SyntheticCT: DRRs and a biplanar radiograph -> synthetic spine CT network (Zanier et al. 2024, TomoRay;
X2CT-GAN, Ying et al. 2019).

Submodules import torch lazily; ``import bonekit.sct`` stays light.
"""
