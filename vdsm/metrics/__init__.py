"""Evaluation: judge classifiers, disentanglement metrics (accuracy, IS, entropies)."""
from .disentanglement import accuracy, entropy_of_mean, inception_score, mean_entropy, prediction_summary
from .judge import JUDGE_HEADS, Judge, load_or_train_judge, train_judge

__all__ = ["accuracy", "inception_score", "mean_entropy", "entropy_of_mean", "prediction_summary",
           "Judge", "JUDGE_HEADS", "train_judge", "load_or_train_judge"]
