"""Reward-model training on crome data: composite Bradley-Terry + tie loss, evaluation, baseline filtering.

Heavy imports (torch, transformers) stay inside the submodules so `import crome` and the CLI start fast:
    crome.train.loss        crome_loss, pair_losses          (pure functions)
    crome.train.data        load_preference_data, PairEncoder, PairCollator
    crome.train.config      CromeConfig (TrainingArguments plus crome's fields)
    crome.train.trainer     CromeRewardTrainer, train(config) -> output dir
    crome.train.pairs       EvalPair, as_eval_pair, load_eval_pairs (test pairs)
    crome.train.robustness  meaning-preserving transformations, robustness_report (the probe)
    crome.train.evaluate    score_pairs, evaluate_pairs, evaluate_model
    crome.train.filter      filter_run
The paper's whole procedure as commands is in RECIPE.md next to this file.
"""
