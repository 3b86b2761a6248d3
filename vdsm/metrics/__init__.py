"""Evaluation: judge classifiers, disentanglement metrics (accuracy, IS, entropies), prediction
metrics (PSNR, SSIM, best of N) and the Frechet distance."""
from .disentanglement import accuracy, entropy_of_mean, inception_score, mean_entropy, prediction_summary
from .frechet import frechet_distance
from .judge import JUDGE_HEADS, Judge, load_or_train_judge, train_judge
from .prediction import best_of_n, psnr, ssim

__all__ = ["accuracy", "inception_score", "mean_entropy", "entropy_of_mean", "prediction_summary",
           "Judge", "JUDGE_HEADS", "train_judge", "load_or_train_judge", "psnr", "ssim", "best_of_n",
           "frechet_distance"]
