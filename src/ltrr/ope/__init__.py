"""Off-policy evaluation: what would a candidate policy have earned on logged decisions?

Every logged decision ``i`` has a context ``x_i``, the action ``a_i`` the logging policy
chose with probability ``p_i = mu(a_i | x_i)`` and the reward ``r_i`` it earned. Given the
candidate (target) policy's probabilities ``pi(a | x_i)`` over the action space, with
importance weights ``w_i = pi(a_i | x_i) / p_i`` (capped at ``clip`` when set):

- IPS    ``V = 1/n sum_i w_i r_i`` (unbiased when every action the target plays was
  possible under the logging policy; mass the target puts on never-logged actions counts
  as reward 0, so IPS under-estimates then),
- SNIPS  ``V = sum_i w_i r_i / sum_i w_i`` (self-normalised: a little bias, less variance;
  it credits never-logged mass with the average of the logged part),
- DR     ``V = 1/n sum_i [ sum_a pi(a|x_i) q(x_i,a) + w_i (r_i - q(x_i,a_i)) ]`` with a
  reward model ``q`` (ridge regression on context x action features, or a shrunk
  per-(context, action) mean), cross-fitted over ``folds`` so a row's own reward never
  fits the model that corrects it. The model also values actions that were never logged.

``pi`` is always the target's own probability under its whole pmf, never renormalised over
the logged actions. The target's mass on actions the logging policy could not play is
reported (``unsupported_mass``); when it is above 0 every estimate is flagged
``reliable: false`` and ``warnings`` says how each estimator treated that mass.

Confidence intervals are bootstrap percentile intervals by default (rows resampled; the
reward model is not refitted per resample) or normal (CLT) intervals (``ci="clt"``; SNIPS
by the delta method). Randomness comes from ``seed`` through independent streams
(``numpy.random.SeedSequence(seed).spawn``): one draws DR's cross-fitting folds, one the
bootstrap resamples (the same resamples for every estimator), so each figure is a function
of the data and the seed only, whatever else was asked for. Diagnostics: effective sample
size ``(sum w)^2 / sum w^2``, the largest weight, the mean weight (≈ 1 when the target's
support is covered), the number of clipped weights, and the unsupported mass.

:func:`estimate_value` works on plain arrays; :func:`evaluate_log` on ltrr's decision log
and a rewards frame; :func:`ope_report` reads a state folder (decisions + events);
:func:`ltrr.cli.output.print_ope_table` shows a report.
"""

from ltrr.ope.estimators import CI_METHODS, ESTIMATORS, REWARD_MODELS, estimate_value
from ltrr.ope.log import default_rewards, evaluate_log, ope_report
from ltrr.ope.protocols import LoggedPmfPolicy, PlayableActionsPolicy, RewardingPolicy
from ltrr.ope.reward_model import allocation_features, flatten_features

__all__ = ["estimate_value", "evaluate_log", "ope_report", "default_rewards",
           "allocation_features", "flatten_features", "LoggedPmfPolicy",
           "PlayableActionsPolicy", "RewardingPolicy", "ESTIMATORS", "REWARD_MODELS",
           "CI_METHODS"]
