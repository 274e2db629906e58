"""Running recipes: the pipeline runner and its cache, recipes, the compress driver, manifest, report, gate."""
