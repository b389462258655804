"""Pairwise preference models (PairPM): one model reads the prompt and both answers and predicts P(A > B).

    template  the versioned judging instruction of a causal-LM PairPM (stored with the model)
    encode    one sequence per order, fair truncation, both orders per pair, the collator
    model     the head (lm: logit A - logit B at the answer slot; classifier: one logit), crome_pairpm.json
    loss      the composite Crome loss over both orders (ties 0.5 either way)
    trainer   PairPMTrainer and train(config) (`crome train --arch pairpm`)
    judge     PairPMJudge: order-averaged P, position consistency; what eval, filter and Best-of-N use
"""
