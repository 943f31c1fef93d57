"""What each cached stage of a trial computes: `itae` (step 1), `flow` (step 2), `scores` (the scoring pass), on
the windows `windows` serves. `vadcore.pipeline` keys, caches and runs them."""
