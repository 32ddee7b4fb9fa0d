"""Reward-model training (layer 4): what the run-time scorers of :mod:`openrft.rewards` are trained from.

* :mod:`~openrft.reward_models.labels`: step-labelled solutions (CHAMP's first wrong step, Math-Shepherd
  labels of the policy's own rollouts), resumable per question;
* :mod:`~openrft.reward_models.value_head_train`: a value head trained on targets at token positions (the
  settings, model, loop and held-out metrics that PRM and ORM training share);
* :mod:`~openrft.reward_models.prm_train`: value-head PRM training (``openrft prm train``);
* :mod:`~openrft.reward_models.orm_train`: outcome reward model training (``openrft orm train``);
* :mod:`~openrft.reward_models.prm_stage`: the pipeline's ``prm`` stage (label, train, measure);
* :mod:`~openrft.reward_models.quality`: how good a PRM is on held-out labelled steps.

Submodules import torch and transformers; import them directly.
"""
