"""Evaluation metrics: PSNR/SSIM/LPIPS (`fidelity`), identity and landmarks (`identity`), FID (`fid`),
no-reference estimates (`noref`), and the folder evaluation behind `codeformer evaluate` (`evaluate`)."""

from codeformer.metrics.fid import FIDInceptionV3, frechet_distance
from codeformer.metrics.fidelity import LPIPSMetric, psnr, rgb_to_y, ssim
from codeformer.metrics.identity import IdentityEmbedder, IdentityScore, landmark_distance
from codeformer.metrics.noref import noise_sigma, sharpness

__all__ = ["FIDInceptionV3", "IdentityEmbedder", "IdentityScore", "LPIPSMetric", "frechet_distance",
           "landmark_distance", "noise_sigma", "psnr", "rgb_to_y", "sharpness", "ssim"]
