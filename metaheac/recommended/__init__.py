"""The recommended method, `MetaHeac+LR`: per campaign, an L2 logistic regression on its seed rows over what
the training campaigns taught, pulled toward the campaign's prior. Its settings: `config.RecommendedConfig`.

The general model (`network.TransferNetwork`), fit on the training campaigns only:
- the meta-trained MetaHeac network; n is its logit for (user, campaign) (`linear.head.network_logit`);
- the bank (`bank.TransferBank`): Category LR's models (one per category, the schema's coarsest hierarchy
  field, and one overall) side by side, `bank.weight` [columns, models] and `bank.bias`, with each one's
  logit `bank.mean` and `bank.std` over training rows;
- the audience factors (`factors`): a user's factors h = x @ factors.embedding, a vector per category and
  advertiser; a campaign's `vector` is its category's plus its advertiser's;
- the user topics (`topics`, fit by `lda`): a user's topic mix m, inferred from the ids alone, and linear
  models on m per category and advertiser; a campaign's `topic_prior` is its category's plus its
  advertiser's.

For a campaign and a user of design row x (`linear.lr.design`), with `category` the campaign's category
model, the seeds fit (`fit.fit_transfer`: Newton, C by cross-validation with the one-standard-error rule)

    logit = category.logit(x) + topic_prior.logit(m)                     (the prior: the fit's offset)
          + scale * [z, n, h . vector / factor_std, topic_prior.logit(m) / topic_std] @ w
          + (h - factors.mean) / h_std @ w_h + (m - topics.mean) / mix_std @ w_m + b

where z = bank.standardised(x) (each bank model's logit, standardised), the stds are over training rows
(`fit._factor_stds`, `fit._topic_stds`) and `scale` lightens the penalty on the prior-like columns. The fit
folds into one `linear.head.LinearHead` (a = scale * w[:models] / bank.std, e = w_h / h_std,
g = w_m / mix_std, on_topic_prior = scale * w[models + 2] / topic_std):

    head.weight         = category.weight + bank.weight @ a
                          + factors.embedding @ (scale * w[models + 1] * vector / factor_std + e)
    head.topic_weight   = topic_prior.weight * (1 + on_topic_prior) + g
    head.general_weight = scale * w[models]
    head.bias           = every constant above

and the head's logit is x @ head.weight + head.bias + m @ head.topic_weight + head.general_weight * n
(`linear.head.head_probability`, the one kernel of adapt, expand and expand_shard). With
`residual_lr`, an L2 LR on the seeds' raw design with that logit as offset then adds its weight and bias.
bench/README.md has the variants tried and their measured effect.

Example::

    from metaheac.methods import method
    from metaheac.recommended.config import RecommendedConfig

    recommended = method("MetaHeac+LR")
    general = recommended.train(features, train_rows, settings=RecommendedConfig(residual_lr=False))
    ((campaign, adapted),) = recommended.adapt_campaigns(general, features, {campaign: seed_rows})
    adapted.head.general_weight          # the fitted weight on the network's logit n
    adapted.score(features, campaign, users)  # sigmoid(the head's logit), float32

Modules: `config` (the settings), `bank` (the bank and its fit), `network` (the general model's tables),
`fit` (the per-campaign fit), `method` (`TransferLR`, the method contract), `factors`, `topics`, `lda`.
"""
