"""The sections of a sweep's report, each a function that adds its blocks to a `results.document.Doc` from the
sweep's trial rows (and frame scores); `results.report` chooses which a sweep gets."""
