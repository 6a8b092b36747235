"""Quality measured on local files: perplexity and KL divergence over a text (llama-perplexity's method),
multiple-choice accuracy by log-likelihood, and the structured tasks' accuracy on the user's labelled rows.
docs/eval.md gives each method and its formulas."""
